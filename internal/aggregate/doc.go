// Package aggregate is the one place where events become counts. Every path that
// writes counts goes through it: the live apply and a rebuild's replay (Applier and
// apply.lua, the exactly-once step), the retention fold into the checkpoint, and
// `processor recount`, which only sums; queryapi reads the counts back into its
// Totals. So "the same increments everywhere" holds because there is one copy of each
// piece:
//
//   - Totals.Add: which counter an event moves.
//   - Increments.Add: which keys an event moves (its user's hash, its product's hash,
//     the ranking), summed per key over a batch.
//   - Increments.AppendArgs: the one encoding of those sums as script arguments.
//   - increments.lua: the one Lua reader of that encoding, which NewScript puts into
//     the apply and fold scripts at start-up.
//
// # The encoding
//
// The increments are the last script arguments, as a sequence of sections. A section
// is an operation, the number of groups that follow, and the groups; a group is one
// key (an index into KEYS, so every key is declared and the script stays
// single-slot) and its items:
//
//	op, g, [key index, m, item 1, …, item m] × g
//
// Today's operations: HINCRBY, whose items are (field, amount) pairs, and ZINCRBY,
// whose items are (amount, member) pairs; each pair is one call. A section with no
// groups is left out.
//
// # Adding kinds of keys and operations
//
// The time dimension (counters per minute, hour and day bucket, per-product rankings
// per bucket, unique users per bucket, active users) fits this shape without changing
// it or the scripts that use it:
//
//   - A new kind of key is a new index in Increments, from what identifies the key
//     (for a bucket: its resolution and start; for a product in a bucket, both) to its
//     slot, so that an event costs a map lookup and the key's name is built once per
//     batch. Bucket counter hashes join the HINCRBY section and bucket rankings the
//     ZINCRBY section as more groups: nothing else changes.
//   - A new operation is one constant and one encoder loop here and one branch in
//     increments.lua: PFADD with elements as items (one multi-element call per
//     bucket per batch), ZADD with a GT flag for the last-seen sorted set (one call per
//     group, its items the (score, member) pairs), EXPIREAT with one item (the bucket's
//     end plus the retention), and ZREMRANGEBYSCORE with one item to trim.
//     apply.lua and fold.lua are not touched: they hand the argument position to
//     apply_increments.
//   - A rebuild starts from a copy of the checkpoint (internal/rebuild, seed), so
//     a kind of key that the fold writes into the checkpoint must be copied there too.
//     TestEveryPathCountsTheSame in processor compares every key that every path
//     writes, whatever its type, and fails until it is.
package aggregate
