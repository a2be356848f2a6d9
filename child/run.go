package child

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Run is the whole life of a typical child: it builds a Child from opts,
// starts it, and calls fn with a context that is cancelled on SIGTERM,
// SIGINT, a Process.Shutdown request or cancellation of ctx. fn should return
// promptly once its context is done (within ShutdownGrace when the master
// asked). Run closes the Child after fn returns and returns fn's error joined
// with any error closing.
func Run(ctx context.Context, opts Options, fn func(ctx context.Context, c *Child) error) error {
	if fn == nil {
		return errors.New("child: Run: fn is nil")
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	c, err := New(opts)
	if err != nil {
		return err
	}
	if err := c.Start(ctx); err != nil {
		return errors.Join(err, c.Close())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case <-c.ShutdownRequested():
			cancel()
		case <-ctx.Done():
		}
	}()
	fnErr := fn(ctx, c)
	cancel()
	<-watchDone
	if closeErr := c.Close(); closeErr != nil {
		return errors.Join(fnErr, fmt.Errorf("child: close: %w", closeErr))
	}
	return fnErr
}
