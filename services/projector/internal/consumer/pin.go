package consumer

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PinGroup is the consumer's one priority group, under JetStream's pinned-client
// policy: one client at a time receives the durable's messages; others pulling wait and
// take over once the pinned one has sent no pull request for PinnedTTL, or was
// unpinned. Package partition gives each partition's durable to one replica (a claim
// in its KV bucket), and the pin makes the server enforce it too.
//
// Why one writer per partition: the version guard of package project relies on the server
// applying a filtered single-document update atomically. MongoDB does; FerretDB, the
// stand-in, reads the matching document and then writes it back by _id alone, so two
// replicas writing one aggregate at once could let an older version overwrite a newer
// one (found by the fault runner, tools/chaos/, when a redelivery sent two versions of a
// todo to two replicas at the same moment). With one writer per durable that cannot
// happen on any server, and one replica applies each batch concurrently
// across aggregates. Every aggregate belongs to one owner, so to one partition: one
// writer per partition is one writer per aggregate. Requires nats-server 2.11 or later.
const PinGroup = "projector"

// pinnedTTL is how long a pinned replica may go without pulling before another takes
// over: Config.PinnedTTL, or AckWait, the time after which its unacknowledged messages
// go to others too.
func (c *Consumer) pinnedTTL() time.Duration {
	if c.cfg.PinnedTTL > 0 {
		return c.cfg.PinnedTTL
	}
	return max(c.cfg.AckWait, time.Second)
}

// restWait bounds the second pull of a batch, which takes what is already waiting:
// FetchNoWait cannot name a priority group.
const restWait = 10 * time.Millisecond

func (c *Consumer) pinned() jetstream.FetchOpt { return jetstream.FetchPriorityGroup(PinGroup) }
