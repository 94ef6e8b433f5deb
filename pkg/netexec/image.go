package netexec

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TestServerImage is the image name that stands for the built-in test server.
const TestServerImage = "svcplane/testserver"

// ForImage tells whether a container with this image, command and args is the built-in test
// server and, if so, with which configuration. It accepts svcplane/testserver (args are
// `svcplane testserver` flags) and agnhost with its netexec or serve-hostname subcommand
// (agnhost's own flags). ok is false for every other image; err reports an agnhost use this
// test server cannot imitate.
func ForImage(image string, command, args []string) (cfg Config, ok bool, err error) {
	repo := imageRepository(image)
	switch {
	case repo == TestServerImage || strings.HasSuffix(repo, "/"+TestServerImage):
		cfg, err = parseFlags(args, map[string]func(*Config, string) error{
			"port":           addPort,
			"hostname":       func(c *Config, v string) error { c.Hostname = v; return nil },
			"serve-hostname": func(c *Config, v string) error { c.ServeHostname = v != "false"; return nil },
			"delay-shutdown": setShutdownDelay,
		})
		return cfg, true, err
	case repo == "agnhost" || strings.HasSuffix(repo, "/agnhost"):
		all := append(append([]string{}, command...), args...)
		// agnhost's entrypoint is /agnhost; a command naming it is the same as none.
		for len(all) > 0 && (all[0] == "/agnhost" || all[0] == "agnhost") {
			all = all[1:]
		}
		if len(all) == 0 {
			return Config{}, true, fmt.Errorf("agnhost needs a subcommand; this test server imitates netexec and serve-hostname")
		}
		switch all[0] {
		case "netexec":
			cfg, err = parseFlags(all[1:], map[string]func(*Config, string) error{
				"http-port":      addPort,
				"udp-port":       addPort,
				"delay-shutdown": setShutdownDelay,
			})
			if err == nil && len(cfg.Ports) == 0 {
				cfg.Ports = []int{8080}
			}
			return cfg, true, err
		case "serve-hostname":
			cfg, err = parseFlags(all[1:], map[string]func(*Config, string) error{
				"port": addPort,
				"http": ignore, "tcp": ignore, "udp": ignore, "close": ignore,
			})
			if err == nil && len(cfg.Ports) == 0 {
				cfg.Ports = []int{9376}
			}
			cfg.ServeHostname = true
			return cfg, true, err
		}
		return Config{}, true, fmt.Errorf("agnhost %s is not supported; this test server imitates netexec and serve-hostname", all[0])
	}
	return Config{}, false, nil
}

// Args turns cfg back into `svcplane testserver` flags.
func (c Config) Args() []string {
	var out []string
	for _, p := range c.Ports {
		out = append(out, "--port="+strconv.Itoa(p))
	}
	if c.Hostname != "" {
		out = append(out, "--hostname="+c.Hostname)
	}
	if c.ServeHostname {
		out = append(out, "--serve-hostname")
	}
	if c.ShutdownDelay > 0 {
		out = append(out, "--delay-shutdown="+strconv.Itoa(int(c.ShutdownDelay/time.Second)))
	}
	return out
}

func imageRepository(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndexByte(image, ':'); i >= 0 && !strings.Contains(image[i:], "/") {
		image = image[:i]
	}
	return image
}

func addPort(c *Config, v string) error {
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("invalid port %q", v)
	}
	c.Ports = append(c.Ports, p)
	return nil
}

// setShutdownDelay reads whole seconds, as agnhost netexec's --delay-shutdown.
func setShutdownDelay(c *Config, v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("invalid number of seconds %q", v)
	}
	c.ShutdownDelay = time.Duration(n) * time.Second
	return nil
}

func ignore(*Config, string) error { return nil }

// parseFlags reads --name=value, --name value and boolean --name; unknown flags are ignored,
// as a Pod spec written for the real agnhost may carry flags we do not need.
func parseFlags(args []string, known map[string]func(*Config, string) error) (Config, error) {
	var cfg Config
	for i := 0; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "--")
		if !ok {
			if name, ok = strings.CutPrefix(args[i], "-"); !ok {
				continue
			}
		}
		value, hasValue := "", false
		if k, v, found := strings.Cut(name, "="); found {
			name, value, hasValue = k, v, true
		}
		set, known := known[name]
		if !known {
			continue
		}
		if !hasValue {
			// Booleans stand alone; others take the next argument.
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") && name != "serve-hostname" && name != "http" && name != "tcp" && name != "udp" && name != "close" {
				value = args[i+1]
				i++
			} else {
				value = "true"
			}
		}
		if err := set(&cfg, value); err != nil {
			return Config{}, fmt.Errorf("--%s: %w", name, err)
		}
	}
	return cfg, nil
}
