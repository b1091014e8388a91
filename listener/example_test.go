package listener_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/herald-hub/herald/listener"
	"github.com/prometheus/client_golang/prometheus"
)

// A net/http server behind a Listener: at most 1,000 connections, 100 new
// ones a second with bursts of 50, refused clients told so with a 503.
func Example() {
	reg := prometheus.NewRegistry()
	l, err := listener.Listen(context.Background(), "tcp", "127.0.0.1:0", listener.Config{
		MaxConns:   1000,
		Rate:       100,
		Burst:      50,
		Refuse:     listener.RefuseHTTP(time.Second),
		Registerer: reg,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "hello\n")
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l) // Serve closes l when the server is shut down
	}()

	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	fmt.Print(resp.Status, " ", string(body))

	client.CloseIdleConnections()
	_ = srv.Shutdown(context.Background())
	<-done
	// Output: 200 OK hello
}
