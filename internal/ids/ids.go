// Package ids makes the ids the service gives its objects: requests
// ("req_"), executions ("exec_"), sessions ("sess_"), stored files
// ("file-"), and the chat completions ("chatcmpl-") and tool calls
// ("call_") it names itself where the model provider did not.
//
// Every id is made by New and has one form: a prefix naming its kind,
// separator included, then Len lowercase hexadecimal digits, 96 bits from
// crypto/rand. That is the form docs/openapi.yaml gives the ids, and
// enough that ids never collide and cannot be guessed; access to what an
// id names is still checked against its owner. Hexadecimal digits are
// safe in file names, URLs and object keys without escaping.
//
// Secrets that are not ids, such as the executor's end-of-output nonce,
// are made where they are used.
package ids

import (
	"crypto/rand"
	"encoding/hex"
)

// Len is the number of random characters after an id's prefix.
const Len = 24

// New returns prefix followed by Len random hexadecimal digits, e.g.
// New("sess_") = "sess_3f9c0a...".
func New(prefix string) string {
	var b [Len / 2]byte
	rand.Read(b[:]) // never fails, see its doc
	return prefix + hex.EncodeToString(b[:])
}
