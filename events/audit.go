package events

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"time"
)

// StreamAudit holds the audit service's checkpoints of every other
// stream's hash chain (SubjectAuditCheckpoint.{stream}).
const StreamAudit = "AUDIT"

// SubjectAuditCheckpoint prefixes audit.checkpoint.{stream}.
const SubjectAuditCheckpoint = "audit.checkpoint"

// TypeAuditCheckpoint is the type of a checkpoint event.
const TypeAuditCheckpoint = "io.otawatch.audit.checkpoint.v1"

// SourceAudit is the audit service's event source.
const SourceAudit = "otawatch/audit"

// AuditCheckpointSubject is the subject of stream's checkpoints.
func AuditCheckpointSubject(stream string) string { return SubjectAuditCheckpoint + "." + stream }

// ChainHead is a position in a stream's hash chain: the chain value after
// the event at Seq (Seq 0 and the zero Head before the first event).
type ChainHead [sha256.Size]byte

// ChainNext is the chain value after the event stored at seq on stream
// with subject and bytes data, given the value before it:
//
//	h_n = SHA-256( h_{n-1}
//	             || uint32be(len(stream))  || stream
//	             || uint64be(seq)
//	             || uint32be(len(subject)) || subject
//	             || SHA-256(data) )
//
// with h_0 the 32 zero bytes. data is the message as JetStream stores it
// (the CloudEvents JSON). The lengths make the concatenation unambiguous.
// Every message the stream holds is in the chain, in sequence order; a
// sequence the stream no longer holds (aged out) is simply absent.
func ChainNext(prev ChainHead, stream string, seq uint64, subject string, data []byte) ChainHead {
	d := sha256.Sum256(data)
	return ChainNextDigest(prev, stream, seq, subject, d)
}

// ChainNextDigest is ChainNext with SHA-256(data) already computed.
func ChainNextDigest(prev ChainHead, stream string, seq uint64, subject string, dataSum [sha256.Size]byte) ChainHead {
	var buf [512]byte
	b := append(buf[:0], prev[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(stream)))
	b = append(b, stream...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint32(b, uint32(len(subject)))
	b = append(b, subject...)
	b = append(b, dataSum[:]...)
	return sha256.Sum256(b)
}

// AuditCheckpointData is the data of TypeAuditCheckpoint: the chain of
// Stream up to and including the event at Seq.
type AuditCheckpointData struct {
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	// Head is the chain value after Seq, lower-case hex.
	Head string `json:"head"`
	// Time is when the stream stored the event at Seq.
	Time time.Time `json:"time"`
	// Events is how many events the chain covers up to Seq.
	Events uint64 `json:"events"`
}

// AuditCheckpointID is the deterministic id (and Nats-Msg-Id) of the
// checkpoint of stream at seq, so two writers (a lease handover) store it
// once.
func AuditCheckpointID(stream string, seq uint64) string {
	return IdentityID("ac", stream, strconv.FormatUint(seq, 10))
}
