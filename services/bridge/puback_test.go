package bridge

import "testing"

// TestParsePubAckFastTakesServerForms: the PubAcks the server sends for a
// stored message take the fast reader (else it would be dead code), and
// it reads them right.
func TestParsePubAckFastTakesServerForms(t *testing.T) {
	tests := []struct {
		name, data string
		want       pubAck
	}{
		{"stored", `{"stream":"SHADOW","seq":7}`, pubAck{Stream: "SHADOW", Seq: 7}},
		{"duplicate", `{"stream":"REJECTED","seq":12,"duplicate":true}`, pubAck{Stream: "REJECTED", Seq: 12, Duplicate: true}},
		{"domain", `{"stream":"SHADOW","domain":"hub","seq":18446744073709551615}`, pubAck{Stream: "SHADOW", Seq: 18446744073709551615}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parsePubAckFast([]byte(tt.data))
			if !ok || got != tt.want {
				t.Fatalf("parsePubAckFast(%s) = %+v, %v; want %+v, true", tt.data, got, ok, tt.want)
			}
		})
	}
}
