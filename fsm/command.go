package fsm

import (
	"encoding/json"
	"fmt"
)

// CommandType is the first byte of every log entry. Numbers are never reused: a retired
// command keeps its number reserved so that old logs still decode.
type CommandType uint8

const (
	TypeCreatePD       CommandType = 1
	TypeDeletePD       CommandType = 2
	TypeCreateFaultSet CommandType = 3
	TypeDeleteFaultSet CommandType = 4
	TypeCreatePool     CommandType = 5
	TypeDeletePool     CommandType = 6
	TypeAddSDS         CommandType = 7
	TypeSetSDSState    CommandType = 8
	TypeRemoveSDS      CommandType = 9
	TypeAddSDC         CommandType = 10
	TypeRemoveSDC      CommandType = 11
	TypeCreateVolume   CommandType = 12
	TypeDeleteVolume   CommandType = 13
	TypeMapVolume      CommandType = 14
	TypeUnmapVolume    CommandType = 15
	TypeExtendVolume   CommandType = 16
	TypeSetLabel       CommandType = 17
	TypeUpsertMDM      CommandType = 18
	TypeRemoveMDM      CommandType = 19
)

// Command is the payload of one log entry.
type Command interface {
	Type() CommandType
}

// Header is stamped by the leader when it proposes a command: the FSM reads time only from here,
// and deduplicates retried requests by RequestID.
type Header struct {
	RequestID string `json:"rid,omitempty"`
	Time      int64  `json:"ts"` // Unix milliseconds
}

type envelope struct {
	Header  Header          `json:"h"`
	Payload json.RawMessage `json:"c"`
}

// Encode builds a log entry: one type byte followed by the JSON envelope.
func Encode(h Header, c Command) ([]byte, error) {
	if _, ok := registry[c.Type()]; !ok {
		return nil, fmt.Errorf("fsm: encode: unregistered command type %d", c.Type())
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode %T: %w", c, err)
	}
	body, err := json.Marshal(envelope{Header: h, Payload: payload})
	if err != nil {
		return nil, fmt.Errorf("fsm: encode %T: %w", c, err)
	}
	return append([]byte{byte(c.Type())}, body...), nil
}

// Decode is the one place a log entry becomes a command. A Batch may also come in a binary
// form (batch_binary.go), told apart by the byte after the type.
func Decode(data []byte) (Header, Command, error) {
	if len(data) < 2 {
		return Header{}, nil, fmt.Errorf("%w: %d bytes", ErrUndecodable, len(data))
	}
	h, ok := registry[CommandType(data[0])]
	if !ok {
		return Header{}, nil, fmt.Errorf("%w: unknown command type %d", ErrUndecodable, data[0])
	}
	if CommandType(data[0]) == TypeBatch && data[1] == batchFormatBinary {
		return decodeBinaryBatch(data[2:])
	}
	var env envelope
	if err := json.Unmarshal(data[1:], &env); err != nil {
		return Header{}, nil, fmt.Errorf("%w: %s envelope: %v", ErrUndecodable, h.name, err)
	}
	c := h.new()
	if err := json.Unmarshal(env.Payload, c); err != nil {
		return Header{}, nil, fmt.Errorf("%w: %s payload: %v", ErrUndecodable, h.name, err)
	}
	return env.Header, c, nil
}

// applyFunc applies one decoded command inside the batch's transaction.
type applyFunc func(tx *applyTx, h Header, c Command) (any, error)

type handler struct {
	name  string
	new   func() Command
	apply applyFunc
	// noSavepoint: the command rejects only before its first write (see rejectsBeforeWriting).
	noSavepoint bool
}

// rejectsBeforeWriting is a registration option for a command whose apply returns a typed
// rejection only before it writes anything, and at most fails with a storage error (which
// panics the replica) after: it runs without a savepoint, two statements fewer per command.
func rejectsBeforeWriting(h *handler) { h.noSavepoint = true }

var registry = map[CommandType]handler{}

// register adds a command type at init time. P is the pointer type that implements Command.
func register[T any, P interface {
	*T
	Command
}](name string, apply func(tx *applyTx, h Header, c P) (any, error), opts ...func(*handler)) {
	typ := P(new(T)).Type()
	if _, dup := registry[typ]; dup {
		panic(fmt.Sprintf("fsm: command type %d registered twice", typ))
	}
	hd := handler{
		name: name,
		new:  func() Command { return P(new(T)) },
		apply: func(tx *applyTx, h Header, c Command) (any, error) {
			return apply(tx, h, c.(P))
		},
	}
	for _, opt := range opts {
		opt(&hd)
	}
	registry[typ] = hd
}

// CommandName names a command type for logs and metrics.
func CommandName(t CommandType) string {
	if h, ok := registry[t]; ok {
		return h.name
	}
	return fmt.Sprintf("unknown(%d)", t)
}
