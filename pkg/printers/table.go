// Package printers renders API objects as the metav1.Table that `kubectl get`
// asks for (Accept: application/json;as=Table;v=v1;g=meta.k8s.io).
//
// Objects come from the registry as stored k8s.io/api v1 types, single or as
// their List type; the tables go back to kubectl. Columns and cell text follow
// kube-apiserver's pkg/printers/internalversion (printers.go) so that kubectl
// prints the same thing against svcplane as against Kubernetes.
package printers

import (
	"context"
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apiserver/pkg/registry/rest"
)

// tableConvertor prints objects of one type, PT (e.g. *corev1.Pod), and lists
// of them.
type tableConvertor[PT runtime.Object] struct {
	columns []metav1.TableColumnDefinition
	// cells returns one value per column, wide ones included: the server
	// always sends every column and kubectl hides Priority 1 ones unless
	// asked for -o wide (upstream generates with Wide: true).
	cells func(obj PT, now time.Time) []any
	// conditions, when set, annotates rows; upstream marks finished pods so
	// that clients can tell them apart.
	conditions func(obj PT) []metav1.TableRowCondition
	now        func() time.Time
}

var _ rest.TableConvertor = (*tableConvertor[runtime.Object])(nil)

func newTableConvertor[PT runtime.Object](columns []metav1.TableColumnDefinition, cells func(PT, time.Time) []any) *tableConvertor[PT] {
	return &tableConvertor[PT]{columns: columns, cells: cells, now: time.Now}
}

func (c *tableConvertor[PT]) ConvertToTable(_ context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	noHeaders, err := noHeadersRequested(tableOptions)
	if err != nil {
		return nil, err
	}
	// One clock reading per table, so rows printed together age together.
	now := c.now()
	table := &metav1.Table{Rows: []metav1.TableRow{}}
	addRow := func(obj runtime.Object) error {
		item, ok := obj.(PT)
		if !ok {
			var want PT
			return fmt.Errorf("printing %T as a table: this printer only handles %T", obj, want)
		}
		row := metav1.TableRow{Cells: c.cells(item, now), Object: runtime.RawExtension{Object: obj}}
		if c.conditions != nil {
			row.Conditions = c.conditions(item)
		}
		table.Rows = append(table.Rows, row)
		return nil
	}
	if meta.IsListType(object) {
		err = meta.EachListItem(object, addRow)
	} else {
		err = addRow(object)
	}
	if err != nil {
		return nil, err
	}

	// Same list metadata as upstream's table generator, so paging with
	// `kubectl get --chunk-size` keeps working on tables.
	if list, err := meta.ListAccessor(object); err == nil {
		table.ResourceVersion = list.GetResourceVersion()
		table.Continue = list.GetContinue()
		table.RemainingItemCount = list.GetRemainingItemCount()
	} else if obj, err := meta.CommonAccessor(object); err == nil {
		table.ResourceVersion = obj.GetResourceVersion()
	}
	if !noHeaders {
		table.ColumnDefinitions = slices.Clone(c.columns)
	}
	return table, nil
}

func noHeadersRequested(tableOptions runtime.Object) (bool, error) {
	switch opts := tableOptions.(type) {
	case nil:
		return false, nil
	case *metav1.TableOptions:
		return opts != nil && opts.NoHeaders, nil
	default:
		return false, fmt.Errorf("unrecognized type %T for table options, can't display tabular output", tableOptions)
	}
}

var objectMetaDocs = metav1.ObjectMeta{}.SwaggerDoc()

func nameColumn() metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name", Description: objectMetaDocs["name"]}
}

func ageColumn() metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: "Age", Type: "string", Description: objectMetaDocs["creationTimestamp"]}
}

func column(name, typ, description string) metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: name, Type: typ, Description: description}
}

// wide marks a column that kubectl shows only with -o wide.
func wide(c metav1.TableColumnDefinition) metav1.TableColumnDefinition {
	c.Priority = 1
	return c
}

// since is upstream's translateTimestampSince.
func since(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
