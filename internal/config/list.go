package config

import "strings"

// Names reads a comma-separated list of names, such as event names that contain spaces
// ("Product Clicked,Product Added"): each is trimmed, empty ones are dropped. Unset (or
// empty) is def, read the same way.
func (r *Reader) Names(name, def string) []string {
	var out []string
	for _, n := range strings.Split(r.String(name, def), ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// Invalid records an error of a variable that the service checks itself (a rule
// between two variables, say); Err reports it with the others.
func (r *Reader) Invalid(name, val, want string) {
	r.bad(name, val, want)
}
