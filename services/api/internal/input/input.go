// Package input turns request bodies into values strictly: valid UTF-8, exactly one
// JSON object, no unknown or differently-cased keys, and every field error collected
// rather than only the first.
//
// encoding/json alone is too lenient for an API contract: it replaces invalid UTF-8
// with U+FFFD, matches keys case-insensitively, ignores unknown keys and reports only
// the first type error. Decode closes those gaps; Field keeps "absent", "null" and "a
// value of the wrong type" apart so that merge patches and validation can tell them
// apart.
package input

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Errors of Decode. They describe the body as a whole; field problems come back as a
// *ValidationError from the domain parsers instead.
var (
	ErrInvalidUTF8 = errors.New("body is not valid UTF-8")
	ErrNotObject   = errors.New("body must be a JSON object")
	ErrTrailing    = errors.New("body has data after the JSON object")
)

// SyntaxError is malformed JSON at a byte offset of the body.
type SyntaxError struct {
	Offset int64
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("malformed JSON at byte %d: %s", e.Offset, e.Msg)
}

// UnknownFieldError names keys of the body that the request type does not have.
type UnknownFieldError struct {
	Fields []string
}

func (e *UnknownFieldError) Error() string {
	return "unknown field(s): " + strings.Join(e.Fields, ", ")
}

// Decode parses body into dst, a pointer to a struct whose fields are Field values
// tagged with their exact JSON names. Keys must match a tag exactly.
func Decode(body []byte, dst any) error {
	if !utf8.Valid(body) {
		return ErrInvalidUTF8
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return &SyntaxError{Offset: syn.Offset, Msg: syn.Error()}
		case errors.As(err, &typ):
			return ErrNotObject
		case errors.Is(err, io.EOF):
			return &SyntaxError{Offset: 0, Msg: "empty body"}
		case errors.Is(err, io.ErrUnexpectedEOF):
			return &SyntaxError{Offset: int64(len(body)), Msg: "unexpected end of body"}
		}
		return &SyntaxError{Offset: dec.InputOffset(), Msg: err.Error()}
	}
	if obj == nil {
		return ErrNotObject // the body was the literal null
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ErrTrailing
	}
	known := jsonNames(dst)
	var unknown []string
	for k := range obj {
		if !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return &UnknownFieldError{Fields: unknown}
	}
	// Field.UnmarshalJSON never fails, so this cannot fail on well-formed input.
	if err := json.Unmarshal(body, dst); err != nil {
		return fmt.Errorf("decode into %T: %w", dst, err)
	}
	return nil
}

func jsonNames(dst any) []string {
	t := reflect.TypeOf(dst).Elem()
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// Field is one member of a request object: absent, null, of the wrong JSON type, or a
// value.
type Field[T any] struct {
	Present bool // the key was in the object
	Null    bool // its value was null
	Invalid bool // its value had the wrong JSON type for T
	Value   T
}

// UnmarshalJSON records what it saw instead of failing, so that Decode can go on and
// the parser can report every bad field at once.
func (f *Field[T]) UnmarshalJSON(b []byte) error {
	f.Present = true
	if string(b) == "null" {
		f.Null = true
		return nil
	}
	if err := json.Unmarshal(b, &f.Value); err != nil {
		f.Invalid = true
	}
	return nil
}

// FieldError is one invalid field, named by a JSON Pointer (RFC 6901) into the body.
type FieldError struct {
	Pointer string
	Detail  string
}

// ValidationError lists every invalid field of one request.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Pointer + ": " + f.Detail
	}
	return "validation failed: " + strings.Join(parts, "; ")
}

// Parse decodes body into a B (see Decode), then has check read it into a T, adding
// every invalid field to errs. It returns Decode's error, a *ValidationError with
// every field error check added, or check's T.
func Parse[B, T any](body []byte, check func(b B, errs *Errors) T) (T, error) {
	var (
		b    B
		zero T
		errs Errors
	)
	if err := Decode(body, &b); err != nil {
		return zero, err
	}
	v := check(b, &errs)
	if err := errs.Err(); err != nil {
		return zero, err
	}
	return v, nil
}

// Errors collects field errors while a parser walks a request.
type Errors struct {
	fields []FieldError
}

// Add records that the field at pointer is invalid.
func (e *Errors) Add(pointer, detail string) {
	e.fields = append(e.fields, FieldError{Pointer: pointer, Detail: detail})
}

// Err returns a *ValidationError with every recorded field, or nil when there is none.
func (e *Errors) Err() error {
	if len(e.fields) == 0 {
		return nil
	}
	return &ValidationError{Fields: slices.Clone(e.fields)}
}

// Text checks a string field's value: between min and max runes (min > 0 makes it
// required) and, unless multiline, free of control characters. It reports whether the
// value is usable.
func (e *Errors) Text(pointer string, f Field[string], min, max int, multiline bool) bool {
	switch {
	case !f.Present || f.Null:
		if min > 0 {
			e.Add(pointer, "is required")
		}
		return false
	case f.Invalid:
		e.Add(pointer, "must be a string")
		return false
	}
	n := utf8.RuneCountInString(f.Value)
	switch {
	case n < min:
		e.Add(pointer, "must not be empty")
		return false
	case n > max:
		e.Add(pointer, fmt.Sprintf("must be at most %d characters", max))
		return false
	}
	for _, r := range f.Value {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\r' || r == '\t')) {
			e.Add(pointer, "must not contain control characters")
			return false
		}
	}
	return true
}
