package wire

import "fmt"

// Kind says what a payload is. It is part of the signed string, so a signature made for one kind can never
// be replayed as another.
type Kind uint16

// Message kinds. Values are part of the wire format: never renumber, only append.
// 1-31: replica-to-replica consensus messages; 32-47: client messages; 48-63: node-level point-to-point
// traffic (fetching batches, state transfer, blocks).
const (
	KindInvalid Kind = 0

	KindPrePrepare Kind = 1
	KindPrepare    Kind = 2
	KindCommit     Kind = 3
	KindCheckpoint Kind = 4
	KindViewChange Kind = 5
	KindNewView    Kind = 6
	KindFetch      Kind = 7 // ask a replica for something the engine is missing (a batch, a certificate)
	KindFetchReply Kind = 8 // the answer to a KindFetch
	KindStatus     Kind = 9 // a replica's periodic word on where it is (view, executed, stable checkpoint)

	KindRequest Kind = 32 // a client request, signed by the client key
	KindReply   Kind = 33 // a replica's reply to a client request
	KindHello   Kind = 34 // a client key names the libp2p host its replies go to (client links)

	KindStateRequest  Kind = 48 // state transfer: ask for a snapshot at a checkpoint
	KindStateResponse Kind = 49 // state transfer: a snapshot chunk or the blocks after it
)

var kindNames = map[Kind]string{
	KindPrePrepare:    "pre-prepare",
	KindPrepare:       "prepare",
	KindCommit:        "commit",
	KindCheckpoint:    "checkpoint",
	KindViewChange:    "view-change",
	KindNewView:       "new-view",
	KindFetch:         "fetch",
	KindFetchReply:    "fetch-reply",
	KindStatus:        "status",
	KindRequest:       "request",
	KindReply:         "reply",
	KindHello:         "hello",
	KindStateRequest:  "state-request",
	KindStateResponse: "state-response",
}

// Valid reports whether k is a kind this version of the protocol knows.
func (k Kind) Valid() bool {
	_, ok := kindNames[k]
	return ok
}

// String returns the kind's protocol name, or "kind(N)" for an unknown value.
func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", uint16(k))
}

// IsReplicaKind reports whether messages of kind k may only be authored by replicas of the chain.
func (k Kind) IsReplicaKind() bool {
	return k != KindRequest && k != KindHello && k.Valid()
}
