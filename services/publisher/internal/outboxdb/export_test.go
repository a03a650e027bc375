package outboxdb

// MarkSQL is the mark's statement, for its plan.
const MarkSQL = markSQL

// Fence is fence, the mark's arrays of rows.
var Fence = fence
