package printers

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/registry/rest"
)

// listedInFull is how many entries an ENDPOINTS or PORTS cell spells out
// before summarising the rest as " + N more...".
const listedInFull = 3

// ForEndpoints prints core/v1 Endpoints and EndpointsLists:
// NAME ENDPOINTS AGE.
func ForEndpoints() rest.TableConvertor {
	return newTableConvertor(
		[]metav1.TableColumnDefinition{
			nameColumn(),
			column("Endpoints", "string", corev1.Endpoints{}.SwaggerDoc()["subsets"]),
			ageColumn(),
		},
		func(ep *corev1.Endpoints, now time.Time) []any {
			return []any{ep.Name, endpointsAddresses(ep.Subsets), since(ep.CreationTimestamp, now)}
		},
	)
}

// endpointsAddresses lists ip:port for every port of every subset, or bare IPs
// for a subset without ports (a headless Service may have none).
func endpointsAddresses(subsets []corev1.EndpointSubset) string {
	if len(subsets) == 0 {
		return "<none>"
	}
	var l abbreviatedList
	for _, subset := range subsets {
		if len(subset.Ports) == 0 {
			for _, addr := range subset.Addresses {
				l.add(addr.IP)
			}
			continue
		}
		for _, port := range subset.Ports {
			for _, addr := range subset.Addresses {
				l.add(net.JoinHostPort(addr.IP, strconv.Itoa(int(port.Port))))
			}
		}
	}
	// Subsets with no addresses print as an empty cell upstream, not <none>.
	return l.String()
}

// ForEndpointSlices prints discovery/v1 EndpointSlices and their lists:
// NAME ADDRESSTYPE PORTS ENDPOINTS AGE.
func ForEndpointSlices() rest.TableConvertor {
	docs := discoveryv1.EndpointSlice{}.SwaggerDoc()
	return newTableConvertor(
		[]metav1.TableColumnDefinition{
			nameColumn(),
			column("AddressType", "string", docs["addressType"]),
			column("Ports", "string", docs["ports"]),
			column("Endpoints", "string", docs["endpoints"]),
			ageColumn(),
		},
		endpointSliceCells,
	)
}

func endpointSliceCells(slice *discoveryv1.EndpointSlice, now time.Time) []any {
	var ports abbreviatedList
	for _, p := range slice.Ports {
		// A port without number or name means all ports.
		switch {
		case p.Port != nil:
			ports.add(strconv.Itoa(int(*p.Port)))
		case p.Name != nil:
			ports.add(*p.Name)
		default:
			ports.add("*")
		}
	}
	var addresses abbreviatedList
	for _, ep := range slice.Endpoints {
		for _, addr := range ep.Addresses {
			addresses.add(addr)
		}
	}
	return []any{
		slice.Name,
		string(slice.AddressType),
		ports.orUnset(),
		addresses.orUnset(),
		since(slice.CreationTimestamp, now),
	}
}

// abbreviatedList keeps the first listedInFull entries and counts the rest.
type abbreviatedList struct {
	shown []string
	total int
}

func (l *abbreviatedList) add(s string) {
	if len(l.shown) < listedInFull {
		l.shown = append(l.shown, s)
	}
	l.total++
}

func (l *abbreviatedList) String() string {
	joined := strings.Join(l.shown, ",")
	if l.total > listedInFull {
		return fmt.Sprintf("%s + %d more...", joined, l.total-listedInFull)
	}
	return joined
}

// orUnset is upstream's rendering of an empty EndpointSlice column.
func (l *abbreviatedList) orUnset() string {
	if s := l.String(); s != "" {
		return s
	}
	return "<unset>"
}
