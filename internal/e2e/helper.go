//go:build !windows

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// HelperMain is the test binary acting as a child of allexmaster, with the
// behaviour ALLEX_TEST_HELPER names.
func HelperMain() int {
	mode := os.Getenv("ALLEX_TEST_HELPER")
	fmt.Printf("helper %s pid %d instance %s\n", mode, os.Getpid(), os.Getenv("ALLEX_INSTANCE"))
	term := make(chan os.Signal, 1)
	switch mode {
	case "ignoreterm":
		signal.Ignore(syscall.SIGTERM)
	default:
		signal.Notify(term, syscall.SIGTERM, os.Interrupt)
	}
	switch mode {
	case "listen", "ignoreterm":
		for _, v := range []string{"ALLEX_TCP_PORT", "ALLEX_HTTP_PORT", "ALLEX_WS_PORT"} {
			if port := os.Getenv(v); port != "" {
				ln, err := net.Listen("tcp", ":"+port)
				if err != nil {
					fmt.Fprintln(os.Stderr, "listen:", err)
					return 3
				}
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						c.Close()
					}
				}()
			}
		}
		fmt.Println("listening")
	case "never":
		fmt.Println("never listening")
	case "exit":
		code, _ := strconv.Atoi(os.Getenv("ALLEX_TEST_CODE"))
		return code
	case "lie", "alloc", "sdk":
		conn, err := grpc.NewClient("unix://"+os.Getenv("ALLEX_MASTER_SOCKET"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fmt.Println("dial:", err)
			return 3
		}
		defer conn.Close()
		c := allexv1.NewMachineManagerClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		inst := os.Getenv("ALLEX_INSTANCE")
		if mode == "lie" {
			_, err = c.Register(ctx, &allexv1.RegisterRequest{Instance: inst, Pid: 1})
			fmt.Printf("lie: %s\n", status.Code(err))
			_, err = c.Register(ctx, &allexv1.RegisterRequest{Instance: "someone-else", Pid: int32(os.Getpid())})
			fmt.Printf("other instance: %s\n", status.Code(err))
		}
		_, err = c.Register(ctx, &allexv1.RegisterRequest{Instance: inst, Pid: int32(os.Getpid())})
		fmt.Printf("honest: %s\n", status.Code(err))
		switch mode {
		case "alloc":
			r, err := c.AllocatePort(ctx, &allexv1.AllocatePortRequest{Protocol: allexv1.Protocol_PROTOCOL_TCP})
			fmt.Printf("extra port: %d %s\n", r.GetPort(), status.Code(err))
		case "sdk":
			time.Sleep(300 * time.Millisecond)
			_, err := c.ReportReady(ctx, &allexv1.ReportReadyRequest{})
			fmt.Printf("ready: %s\n", status.Code(err))
		}
	}
	select {
	case <-term:
		fmt.Println("got SIGTERM")
		return 0
	case <-time.After(10 * time.Minute):
		return 4
	}
}
