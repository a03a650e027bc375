package consumer

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// pinGroup is the consumer's one priority group, under JetStream's pinned-client
// policy: one replica at a time receives messages; the others pull as hot standbys and
// take over once the pinned one has sent no pull request for pinnedTTL.
//
// Why one active replica: the version guard of package project relies on the server
// applying a filtered single-document update atomically. MongoDB does; FerretDB, the
// stand-in, reads the matching document and then writes it back by _id alone, so two
// replicas writing one aggregate at once could let an older version overwrite a newer
// one (found by the fault runner, chaos/, when a redelivery sent two versions of a
// todo to two replicas at the same moment). With one writer per stream that cannot
// happen on any server, and one replica already applies each batch concurrently
// across aggregates. Requires nats-server 2.11 or later.
const pinGroup = "projector"

// pinnedTTL is how long a pinned replica may go without pulling before another takes
// over: AckWait, the time after which its unacknowledged messages go to others too.
func (c *Consumer) pinnedTTL() time.Duration { return max(c.cfg.AckWait, time.Second) }

// restWait bounds the second pull of a batch, which takes what is already waiting:
// FetchNoWait cannot name a priority group.
const restWait = 10 * time.Millisecond

func (c *Consumer) pinned() jetstream.FetchOpt { return jetstream.FetchPriorityGroup(pinGroup) }
