package app

// Storage is the durable, ordered key-value space the node lends an application: its own namespace in the
// node's database. Reads see committed data only. Writes that must be atomic with blocks go through the
// Writer that Commit receives; writes that need not (staging a restore, pinning a snapshot, garbage
// collection) go through NewBatch. All methods are safe for concurrent use. Commits are ordered: a commit
// with sync makes every earlier commit durable too (the store writes one log), so writes staged without sync
// become durable with the next synced batch, such as the node's block batch.
type Storage interface {
	// Get returns a copy of the value of key, and whether it exists.
	Get(key []byte) (value []byte, ok bool, err error)
	// NewIter returns an iterator over the keys in [lower, upper) (nil bounds are open) that sees one
	// consistent point in time: writes committed after it was created are invisible to it.
	NewIter(lower, upper []byte) (Iterator, error)
	// NewBatch returns an empty batch of writes, applied atomically by Batch.Commit.
	NewBatch() Batch
}

// Writer collects writes. Nothing is visible until the batch holding them is committed.
type Writer interface {
	Set(key, value []byte) error
	Delete(key []byte) error
	// DeleteRange deletes every key in [start, end).
	DeleteRange(start, end []byte) error
}

// Batch is a Writer the application commits itself.
type Batch interface {
	Writer
	// Commit applies the writes atomically; with sync they are durable when it returns.
	Commit(sync bool) error
	// Close releases the batch; writes not committed are dropped.
	Close() error
}

// Iterator walks keys in increasing byte order. Key and Value are valid until the next move or Close.
type Iterator interface {
	// First moves to the first key; SeekGE to the first key >= key; Next to the following key. Each
	// reports whether the iterator is now at a key.
	First() bool
	SeekGE(key []byte) bool
	Next() bool
	Valid() bool
	Key() []byte
	Value() []byte
	// Error returns the error that stopped iteration, if any.
	Error() error
	Close() error
}
