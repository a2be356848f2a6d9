// Package child is the library a Go program uses to be a well-behaved
// allexmaster child. It owns everything a child does towards its master:
// reading the ALLEX_* environment the master sets, serving allex.v1.Process
// on /tmp/allexprocess.<pid> (Info, Health, Shutdown), registering with the
// master's allex.v1.MachineManager socket, listening on the assigned ports
// and reporting readiness.
//
// A typical child:
//
//	err := child.Run(ctx, child.DefaultOptions(), func(ctx context.Context, c *child.Child) error {
//		ln, err := c.Listen("http") // the last assigned protocol listened on reports ready
//		if err != nil {
//			return err
//		}
//		srv := &http.Server{Handler: h}
//		go func() { <-ctx.Done(); srv.Close() }()
//		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
//			return err
//		}
//		return nil
//	})
//
// Running without a master: Start returns an error wrapping ErrNoMaster when
// ALLEX_MASTER_SOCKET is unset or nobody answers on it. The Process socket
// stays served in that case, so a caller that wants to run standalone may
// ignore that error (or set Options.AllowStandalone); calls that need the
// master (Ready, AllocatePort, LookupPorts, Report, ...) then return
// ErrNoMaster and automatic readiness is skipped.
package child
