package consumer

import (
	"context"
	"errors"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// outageProbeID is an _id no document has: the probe only asks whether reads work.
const outageProbeID = "outage-probe: no such document"

// readModelDown reports whether results hold a rejected write while the read model
// also fails a trivial read. An error the server answered rejects that very write only
// while the server can serve reads: FerretDB answers InternalError to every command
// while its PostgreSQL backend is down (seen by the fault runner, tools/chaos/), which is an
// outage to hold the batch through, not documents to nak towards the dead letters.
func readModelDown(ctx context.Context, db *mongo.Database, results []project.Result) bool {
	rejected := false
	for _, r := range results {
		rejected = rejected || (r.Err != nil && isRejected(r.Err))
	}
	if !rejected {
		return false
	}
	err := db.Collection(readmodel.CollTodos).FindOne(ctx, bson.D{{Key: "_id", Value: outageProbeID}}).Err()
	return err != nil && !errors.Is(err, mongo.ErrNoDocuments)
}
