package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// HTTPServer is one HTTP listener of an SDS or SDC (control or mgmt).
type HTTPServer struct {
	ln   net.Listener
	srv  *http.Server
	done chan error
}

// Listen binds addr; field names the config field in the error ("api_addr 127.0.0.1:9101:
// address already in use").
func Listen(field, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", field, addr, err)
	}
	return ln, nil
}

// Serve serves h on ln until Close.
func Serve(ln net.Listener, h http.Handler) *HTTPServer {
	s := &HTTPServer{
		ln: ln,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
		},
		done: make(chan error, 1),
	}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s
}

// Addr is the bound address.
func (s *HTTPServer) Addr() string { return s.ln.Addr().String() }

// Done delivers the error that stopped serving (nil after Close).
func (s *HTTPServer) Done() <-chan error { return s.done }

// Close stops accepting and waits up to 5 s for requests in flight.
func (s *HTTPServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
