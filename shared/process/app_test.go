package process_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"

	"github.com/outboxtodo/outboxtodo/shared/process"
)

// fakeApp records what RunApp does with it.
type fakeApp struct {
	calls         *[]string
	runErr, clErr error
}

func (a fakeApp) Run(context.Context) error { *a.calls = append(*a.calls, "run"); return a.runErr }
func (a fakeApp) Close() error              { *a.calls = append(*a.calls, "close"); return a.clErr }

func TestRunApp(t *testing.T) {
	t.Parallel()
	runErr, closeErr, loadErr, buildErr := errors.New("run"), errors.New("close"), errors.New("load"), errors.New("build")
	for _, tt := range []struct {
		name      string
		load      error
		build     error
		app       fakeApp
		wantCalls []string
		wantErrs  []error
	}{
		{"clean", nil, nil, fakeApp{}, []string{"build", "run", "close"}, nil},
		{"run and close fail", nil, nil, fakeApp{runErr: runErr, clErr: closeErr}, []string{"build", "run", "close"}, []error{runErr, closeErr}},
		{"bad config", loadErr, nil, fakeApp{}, nil, []error{loadErr}},
		{"build fails", nil, buildErr, fakeApp{}, []string{"build"}, []error{buildErr}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var calls []string
			tt.app.calls = &calls
			err := process.RunApp(context.Background(), slog.New(slog.DiscardHandler),
				func() (int, error) { return 7, tt.load },
				func(_ context.Context, cfg int, _ *slog.Logger) (fakeApp, error) {
					if cfg != 7 {
						t.Errorf("built from config %d, want the loaded 7", cfg)
					}
					calls = append(calls, "build")
					return tt.app, tt.build
				})
			if !slices.Equal(calls, tt.wantCalls) {
				t.Errorf("calls %v, want %v", calls, tt.wantCalls)
			}
			for _, want := range tt.wantErrs {
				if !errors.Is(err, want) {
					t.Errorf("error %v lacks %v", err, want)
				}
			}
			if len(tt.wantErrs) == 0 && err != nil {
				t.Errorf("error %v, want nil", err)
			}
		})
	}
}

func TestCloserReleasesInReverseOnce(t *testing.T) {
	t.Parallel()
	var (
		c     process.Closer
		order []int
	)
	boom := errors.New("boom")
	for i := range 3 {
		c.Add(func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				t.Error("a release got a context without a deadline")
			}
			order = append(order, i)
			if i == 1 {
				return boom
			}
			return nil
		})
	}
	if err := c.Close(); !errors.Is(err, boom) {
		t.Fatalf("error %v, want boom", err)
	}
	if !slices.Equal(order, []int{2, 1, 0}) {
		t.Fatalf("released in order %v, want the last added first", order)
	}
	if err := c.Close(); err != nil || len(order) != 3 {
		t.Fatalf("a second Close released again (%v, %v)", order, err)
	}
}

func TestCloserCloseOnError(t *testing.T) {
	t.Parallel()
	for _, fail := range []error{nil, errors.New("boom")} {
		var c process.Closer
		released := false
		c.Add(func(context.Context) error { released = true; return nil })
		err := fail
		c.CloseOnError(&err)
		if released != (fail != nil) || !errors.Is(err, fail) {
			t.Errorf("after %v: released %v, error %v", fail, released, err)
		}
	}
}
