package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/herald-hub/herald/client"
)

// Publish an update and receive it on a subscription. startHerald runs a
// herald hub on a loopback port for the example; h.URL is its URL and the
// tokens grant every topic.
func Example() {
	h, err := startHerald(http1, false)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()

	c, err := client.New(client.Config{
		Hub:             h.URL,
		PublisherToken:  h.PublisherToken,
		SubscriberToken: h.SubscriberToken,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	sub, err := c.Subscribe(ctx, client.SubscribeOptions{Topics: []string{"https://example.com/books/1"}})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	id, err := c.Publish(ctx, client.Update{
		Topics: []string{"https://example.com/books/1"},
		Data:   `{"title":"Dune"}`,
		ID:     "urn:uuid:0b7b0b5e-1",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("published", id)

	ev := <-sub.Events()
	fmt.Println("received", ev.ID, ev.Data)
	// Output:
	// published urn:uuid:0b7b0b5e-1
	// received urn:uuid:0b7b0b5e-1 {"title":"Dune"}
}

// Resume from a known point: the hub replays what followed it, and
// OnConnect tells whether it could resume exactly there.
func ExampleClient_Subscribe() {
	h, err := startHerald(http1, false)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	c, err := client.New(client.Config{Hub: h.URL, PublisherToken: h.PublisherToken, SubscriberToken: h.SubscriberToken})
	if err != nil {
		log.Fatal(err)
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	for _, id := range []string{"urn:ex:1", "urn:ex:2", "urn:ex:3"} {
		if _, err := c.Publish(ctx, client.Update{Topics: []string{"https://example.com/feed"}, ID: id, Data: "update " + id}); err != nil {
			log.Fatal(err)
		}
	}

	sub, err := c.Subscribe(ctx, client.SubscribeOptions{
		Topics:      []string{"https://example.com/feed"},
		LastEventID: "urn:ex:1", // saved from an earlier run: sub.LastEventID()
		OnConnect: func(i client.ConnectInfo) {
			fmt.Printf("connected: asked %s, resumed from %s, possible loss: %v\n", i.Requested, i.ResumedFrom, i.PossibleLoss)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	for range 2 {
		ev := <-sub.Events()
		fmt.Println(ev.ID, ev.Data)
	}
	sub.Close()
	fmt.Println("resume next time from", sub.LastEventID())
	// Output:
	// connected: asked urn:ex:1, resumed from urn:ex:1, possible loss: false
	// urn:ex:2 update urn:ex:2
	// urn:ex:3 update urn:ex:3
	// resume next time from urn:ex:3
}

// A refused publication is a *HubError carrying the status, the hub's
// message and its authentication challenge.
func ExampleHubError() {
	h, err := startHerald(http1, false)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	c, err := client.New(client.Config{Hub: h.URL}) // no publisher token
	if err != nil {
		log.Fatal(err)
	}
	defer c.CloseIdleConnections()

	_, err = c.Publish(context.Background(), client.Update{Topics: []string{"https://example.com/books/1"}, Data: "x"})
	if he, ok := errors.AsType[*client.HubError](err); ok {
		fmt.Println(he.Status, he.Message)
	}
	// Output:
	// 401 a publisher token is required
}
