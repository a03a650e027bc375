package consumer

// PinGroup lets tests pull as a replica of the projector does.
const PinGroup = pinGroup
