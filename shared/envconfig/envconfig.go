// Package envconfig reads a service's configuration struct from the environment with
// caarlos0/env and derives its start-up log from the same struct tags, so that the
// dump cannot drift from the settings.
//
// The tags it reads besides caarlos0/env's:
//
//	secret:"true"      the value is a secret: logged as xxxxx when set, empty otherwise
//	secret:"url"       a URL that may hold a password (PostgreSQL, MongoDB): redact.URL
//	secret:"natsurls"  comma-separated NATS URLs, whose user alone may be a token:
//	                   redact.NATSURLs
//
// Any other value of secret masks the whole value, as "true" does.
package envconfig

import (
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/outboxtodo/outboxtodo/shared/redact"
)

// Parse reads a T from environ, or from the process environment when environ is nil.
// It does not validate: that is T's own business.
func Parse[T any](environ map[string]string) (T, error) {
	opts := env.Options{}
	if environ != nil {
		opts.Environment = environ
	}
	c, err := env.ParseAsWithOptions[T](opts)
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	return c, nil
}

// mask stands for a secret that is set.
const mask = "xxxxx"

// LogValue is the loggable form of cfg, a struct (or a pointer to one) read by
// caarlos0/env: a group of one attribute per env-tagged field, keyed by its
// variable's name (NATS_URL), in the struct's order. Untagged struct fields are
// followed, their envPrefix prepended, and their fields listed in place; fields tagged
// env:"-" and unexported ones are left out. Durations, alone or in slices, print as
// time.Duration.String (1m30s), the form the variables take. Secrets are masked by
// their secret tag (see the package doc).
func LogValue(cfg any) slog.Value {
	v := reflect.ValueOf(cfg)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return slog.AnyValue(cfg)
	}
	return slog.GroupValue(attrs(nil, v, "")...)
}

// attrs appends the attributes of struct v's fields, their names prefixed with prefix.
func attrs(out []slog.Attr, v reflect.Value, prefix string) []slog.Attr {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		fv := v.Field(i)
		if name == "" {
			if fv.Kind() == reflect.Pointer && !fv.IsNil() {
				fv = fv.Elem()
			}
			if fv.Kind() == reflect.Struct {
				out = attrs(out, fv, prefix+f.Tag.Get("envPrefix"))
			}
			continue
		}
		if name == "-" {
			continue
		}
		out = append(out, slog.Any(prefix+name, value(fv, f.Tag)))
	}
	return out
}

// value is the loggable form of one field's value.
func value(v reflect.Value, tag reflect.StructTag) any {
	kind, secret := tag.Lookup("secret")
	switch {
	case !secret:
		return plain(v)
	case kind == "url" && v.Kind() == reflect.String:
		return redact.URL(v.String())
	case kind == "natsurls" && v.Kind() == reflect.String:
		return redact.NATSURLs(v.String())
	case v.IsZero():
		return ""
	}
	return mask
}

// plain is v as logged: durations as strings, slices element by element.
func plain(v reflect.Value) any {
	if d, ok := v.Interface().(time.Duration); ok {
		return d.String()
	}
	if v.Kind() == reflect.Slice {
		out := make([]any, v.Len())
		for i := range out {
			out[i] = plain(v.Index(i))
		}
		return out
	}
	return v.Interface()
}
