package ferret_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
)

// TestRestartKeepsData stops the server and starts it again on the same address: the
// data lives in PostgreSQL, and a client pooled across the outage recovers.
func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	srv := ferret.StartTest(t)
	ctx := sharedtest.Context(t, time.Minute)
	coll := srv.Client(t).Database("restart").Collection("docs")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: 1}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	addr := srv.Addr()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	downCtx, downCancel := context.WithTimeout(ctx, 3*time.Second)
	defer downCancel()
	if err := coll.FindOne(downCtx, bson.D{{Key: "_id", Value: "a"}}).Err(); err == nil {
		t.Fatal("find succeeded while the server was stopped")
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if srv.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", srv.Addr(), addr)
	}
	var got struct {
		N int `bson:"n"`
	}
	sharedtest.Eventually(t, 20*time.Second, func() (bool, string) {
		err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "a"}}).Decode(&got)
		return err == nil, fmt.Sprintf("find after restart: %v", err)
	})
	if got.N != 1 {
		t.Fatalf("n = %d, want 1", got.N)
	}
}
