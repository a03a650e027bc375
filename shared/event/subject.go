package event

import (
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultSubjectPrefix is the first token of every event subject.
const DefaultSubjectPrefix = "todo.events"

// Subject is the JetStream subject of e:
//
//	<prefix>.<aggregate_type>.<owner_id>.<aggregate_id>
//
// so that wildcards select one user's events (<prefix>.*.<owner_id>.*), one aggregate's
// events (<prefix>.todo.*.<todo_id>) or one aggregate type (<prefix>.user.>).
func Subject(prefix string, e Envelope) string {
	return fmt.Sprintf("%s.%s.%s.%s", prefix, e.AggregateType, e.OwnerID, e.AggregateID)
}

// StreamSubjects is the subject filter a stream needs to hold every event.
func StreamSubjects(prefix string) string { return prefix + ".>" }

// OwnerFilter selects every event of one user: their own changes and their todos'.
func OwnerFilter(prefix string, owner uuid.UUID) string {
	return fmt.Sprintf("%s.*.%s.*", prefix, owner)
}

// ValidSubjectPrefix reports whether p can prefix subjects: dot-separated tokens
// without wildcards or whitespace.
func ValidSubjectPrefix(p string) bool {
	if p == "" {
		return false
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return false
		}
	}
	return true
}

// The stream is partitioned by owner: a subject transform of the stream prefixes every
// stored subject with its owner's partition,
//
//	<partition>.<prefix>.<aggregate_type>.<owner_id>.<aggregate_id>
//
// computed by the server as partition(n, owner_id), so that everything of one user is
// in one partition, in stream order, and one projector replica at a time consumes a
// partition. Publishers keep publishing the plain subject (Subject); the stream
// rewrites it. The partition count is read back from the stream's configuration
// (Partitions), so that it has one source of truth.

// PartitionTransform is the stream's subject transform into n partitions.
func PartitionTransform(prefix string, n int) *jetstream.SubjectTransformConfig {
	return &jetstream.SubjectTransformConfig{
		Source:      prefix + ".*.*.*",
		Destination: fmt.Sprintf("{{partition(%d,2)}}.%s.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}", n, prefix),
	}
}

// Partitions is the partition count of a stream configured with PartitionTransform,
// or 0 for a stream without it (the unpartitioned layout of earlier releases, whose
// stored subjects are the plain ones).
func Partitions(cfg jetstream.StreamConfig, prefix string) int {
	tr := cfg.SubjectTransform
	if tr == nil {
		return 0
	}
	var n int
	if _, err := fmt.Sscanf(tr.Destination, "{{partition(%d,2)}}", &n); err != nil || !ValidPartitions(n) || *PartitionTransform(prefix, n) != *tr {
		return 0
	}
	return n
}

// maxPartitions bounds the partition count: more than replicas could ever use only
// adds consumers.
const maxPartitions = 1024

// ValidPartitions reports whether n is a usable partition count.
func ValidPartitions(n int) bool { return n >= 1 && n <= maxPartitions }

// PartitionFilter selects the stored subjects of partition p.
func PartitionFilter(prefix string, p int) string { return fmt.Sprintf("%d.%s.>", p, prefix) }

// PartitionOf is the partition the stream's transform gives owner's events: the
// server's partition(n, token), an FNV-1a hash of the owner token modulo n.
func PartitionOf(owner uuid.UUID, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(owner.String()))
	return int(h.Sum32() % uint32(n))
}

// PartitionedSubjects selects every stored subject of a partitioned stream.
func PartitionedSubjects(prefix string) string { return "*." + prefix + ".>" }

// PartitionDurable names the durable consumer of partition p among the consumers
// named after durable: <durable>-p<p>.
func PartitionDurable(durable string, p int) string { return fmt.Sprintf("%s-p%d", durable, p) }

// IsConsumerOf reports whether the consumer name is one of durable's: a partition's
// (PartitionDurable), or durable itself (the unpartitioned layout's, until it is
// drained).
func IsConsumerOf(name, durable string) bool {
	if name == durable {
		return true
	}
	rest, ok := strings.CutPrefix(name, durable+"-p")
	return ok && rest != "" && strings.Trim(rest, "0123456789") == ""
}

// LegacyUnit is the unit of the unpartitioned layout's durable in the projector's
// membership bucket (its claim is c.legacy); a partition's unit is p<i>.
const LegacyUnit = "legacy"

// ConsumerUnit is the unit the projector's replicas claim for the consumer name
// among durable's (c.<unit> in the membership bucket): p<i> for
// PartitionDurable(durable, i), LegacyUnit for durable itself, "" for a consumer that
// is not durable's.
func ConsumerUnit(name, durable string) string {
	switch {
	case !IsConsumerOf(name, durable):
		return ""
	case name == durable:
		return LegacyUnit
	}
	return "p" + strings.TrimPrefix(name, durable+"-p")
}
