package tdx

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
)

// The dstack tdx-lite fixture: a real TD quote (v4) from dstack-0.6.0 on
// QEMU 8.2.2, 2 vCPUs, 2 GiB, with its event log
// (Dstack-TEE/dstack@312dc605 dstack/verifier/fixtures/tdx-lite-getquote.json,
// CC0-1.0, copied unchanged to testdata/dstack with LICENSE-dstack-fixtures-CC0-1.0).
// ../shared/vectors/tdx.json rtmr_cases[0] "dstack_tdx_lite_hardware_quote"
// gives each event's preimage; the values below marked "literal" are
// digests that case can only state, not recompute (their inputs are not
// in the fixture).
type liteLogEvent struct {
	IMR       int    `json:"imr"`
	EventType uint32 `json:"event_type"`
	Digest    string `json:"digest"`
	Event     string `json:"event"`
	Payload   string `json:"event_payload"`
}

func loadLiteFixture(t *testing.T) (*pb.QuoteV4, []liteLogEvent) {
	t.Helper()
	raw, err := os.ReadFile("testdata/dstack/tdx-lite-getquote.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Quote    string `json:"quote"`
		EventLog string `json:"event_log"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	q, err := abi.QuoteToProto(unhexT(t, doc.Quote))
	if err != nil {
		t.Fatalf("parsing the fixture quote: %v", err)
	}
	quote, ok := q.(*pb.QuoteV4)
	if !ok {
		t.Fatalf("fixture quote is %T, want a v4 quote", q)
	}
	var log []liteLogEvent
	if err := json.Unmarshal([]byte(doc.EventLog), &log); err != nil {
		t.Fatal(err)
	}
	return quote, log
}

func d48(t *testing.T, s string) [48]byte {
	t.Helper()
	b := unhexT(t, s)
	if len(b) != 48 {
		t.Fatalf("%q is %d bytes, want 48", s, len(b))
	}
	return [48]byte(b)
}

// Literal digests of rtmr_cases[0]: the dstack OVMF's CFV, QEMU 8.2.2's
// ACPI blobs, the patched dstack kernel, its command line and initrd.
const (
	liteCFV         = "344bc51c980ba621aaa00da3ed7436f7d6e549197dfe699515dfa2c6583d95e6412af21c097d473155875ffd561d6790"
	liteACPILoader  = "095d04cf26fe03aef6e3561fa24c1aa1cea93f4aeaf563b1f9f7616184c53454875925759434769cec2490acb563a337"
	liteACPIRSDP    = "8d9a4d4777a1bc77ecd9d8d37a4628129a80052a510320159a20a923bd07a0e90d8d1f2e1ebf088992b25f0d0fa672ef"
	liteACPITables  = "3070721e169bc41884724cb0e6b3082e1baf249083d8b389181ba50b9afa951057876c380b8870e8c2facf2eff67a2b6"
	liteKernel      = "ac7e632dcf5cd2a1fe5c1f41f4d9b8219570e64ed3c61038fdbf25404e6f542ffd57f276bc5076307efaf882e6d64177"
	liteCmdline     = "786280842b7364287a3a70d96f7e309252857beb45fb1f91314a2ea863db0adc04c8431ecbf29a966405604631a5aab8"
	liteInitrd      = "4fe4f7710134a61d7def357add6ac50bdbfeee5032a4c100375e207216ffe42a3bd5822b24e679f91501fff795b81521"
	liteMRTDTwoPass = "fd685522ce791dfef67414614eb07d03fc07a32c5a66f36288b329dab92b724b1564c73d436ffb9ea84488c51ac5a1c5"
)

// TestTDHOBVectors reproduces tdx.json td_hob_cases. The 2 GiB HOB is
// hardware-confirmed: its digest is the first RTMR0 event of the dstack
// tdx-lite quote, whose OVMF has the CleanExample's TD_HOB/TEMP_MEM layout
// (the fixture's TD-HOB witness), and its bytes are
// testdata/dstack/td_hob_tdx_lite_2GiB.bin. The 4 GiB and 16 GiB values
// are DERIVED (the vector collection's re-implementation of dstack-mr's
// split into [start, 2 GiB) + [4 GiB, 4 GiB + memory - 2 GiB)): regression
// values only, not hardware-confirmed.
func TestTDHOBVectors(t *testing.T) {
	secs, err := ParseTDVF(cleanExample(t))
	if err != nil {
		t.Fatal(err)
	}
	want2G, err := os.ReadFile("testdata/dstack/td_hob_tdx_lite_2GiB.bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		memory uint64
		size   int
		digest string
		bytes  []byte
	}{
		{"td_hob_clean_example_2GiB", 2 << 30, 440, "0b8772e5b0b41b83e6044a68397e02f49fb47066b4fbe4917ea2c45c64f323fdacbb37948f821ebaf8bc9c938ba8a749", want2G},
		{"td_hob_clean_example_4GiB_DERIVED", 4 << 30, 488, "5b684faf8d02a733945f821d9cdd170802e72103977acf66949c9382500283adc90cbec57f8e7653f8bee1cab83689de", nil},
		{"td_hob_clean_example_16GiB_DERIVED", 16 << 30, 488, "cd2312a0d87ef3c4a928df87088969a80b33d7bf3fc584bdde637b09ed808a8d821a56b78a13a6eb506db7578444abbe", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			hob, err := QEMUTDHOB(secs, c.memory)
			if err != nil {
				t.Fatal(err)
			}
			if len(hob) != c.size {
				t.Errorf("HOB is %d bytes, want %d", len(hob), c.size)
			}
			if c.bytes != nil && !bytes.Equal(hob, c.bytes) {
				t.Errorf("HOB bytes differ from the fixture:\n got %x\nwant %x", hob, c.bytes)
			}
			if got := sha384(hob); got != d48(t, c.digest) {
				t.Errorf("HOB digest %x, want %s", got, c.digest)
			}
		})
	}
}

// TestDstackTDXLiteHardwareQuote recomputes every RTMR0-3 event digest of
// the hardware event log that the vectors define from first principles,
// takes the literals for the rest, checks each against the log in order,
// and replays the log into the RTMR values the quote attests.
func TestDstackTDXLiteHardwareQuote(t *testing.T) {
	quote, log := loadLiteFixture(t)
	body := quote.GetTdQuoteBody()
	secs, err := ParseTDVF(cleanExample(t))
	if err != nil {
		t.Fatal(err)
	}
	hob, err := QEMUTDHOB(secs, 2<<30) // vm_config.memory_size
	if err != nil {
		t.Fatal(err)
	}
	var want []Event
	want = append(want, RTMR0Events(hob, d48(t, liteCFV), ACPIDigests{
		TableLoader: d48(t, liteACPILoader), RSDP: d48(t, liteACPIRSDP), Tables: d48(t, liteACPITables),
	})...)
	want = append(want, RTMR1Events(d48(t, liteKernel))...)
	// RTMR2: both digests are literals of the fixture's measurement
	// document (the command line text and the initrd are not in it).
	want = append(want,
		Event{2, EvEventTag, "kernel command line (literal)", d48(t, liteCmdline)},
		Event{2, EvEventTag, "initrd (literal)", d48(t, liteInitrd)})
	// RTMR3: dstack's runtime events, SHA-384(le32(type) || ":" || name ||
	// ":" || payload) (dstack cc-eventlog runtime_events.rs); veil's guest
	// does not extend RTMR3, so this rule lives in the test only. The log
	// leaves their digests empty: the quote's RTMR3 checks them.
	for _, e := range log {
		if e.IMR != 3 {
			continue
		}
		var p []byte
		p = binary.LittleEndian.AppendUint32(p, e.EventType)
		p = append(p, ':')
		p = append(p, e.Event...)
		p = append(p, ':')
		p = append(p, unhexT(t, e.Payload)...)
		want = append(want, Event{3, e.EventType, e.Event, sha384(p)})
	}

	// Per register, the log's events must be ours, in order.
	var byReg [4][]Event
	for _, e := range want {
		byReg[e.Register] = append(byReg[e.Register], e)
	}
	var next [4]int
	var logged []Event
	for i, e := range log {
		if e.IMR < 0 || e.IMR > 3 || next[e.IMR] >= len(byReg[e.IMR]) {
			t.Fatalf("log event %d: unexpected event on RTMR%d", i, e.IMR)
		}
		w := byReg[e.IMR][next[e.IMR]]
		next[e.IMR]++
		if w.Type != e.EventType {
			t.Errorf("log event %d (%s): type %#x, want %#x", i, w.Name, e.EventType, w.Type)
		}
		if e.Digest != "" && d48(t, e.Digest) != w.Digest {
			t.Errorf("log event %d (RTMR%d %s): logged digest %s, computed %x", i, e.IMR, w.Name, e.Digest, w.Digest)
		}
		logged = append(logged, w)
	}
	for r := range 4 {
		if next[r] != len(byReg[r]) {
			t.Errorf("RTMR%d: log has %d events, want %d", r, next[r], len(byReg[r]))
		}
	}
	// The event counts of tdx.json: 13 RTMR0, 5 RTMR1, 2 RTMR2, 9 RTMR3.
	if len(byReg[0]) != 13 || len(byReg[1]) != 5 || len(byReg[2]) != 2 || len(byReg[3]) != 9 {
		t.Errorf("event counts %d/%d/%d/%d, want 13/5/2/9", len(byReg[0]), len(byReg[1]), len(byReg[2]), len(byReg[3]))
	}

	rtmrs, err := Replay(logged)
	if err != nil {
		t.Fatal(err)
	}
	for r := range 4 {
		if !bytes.Equal(rtmrs[r][:], body.GetRtmrs()[r]) {
			t.Errorf("RTMR%d: replayed %x, quote %x", r, rtmrs[r], body.GetRtmrs()[r])
		}
	}
	// MRTD cannot be recomputed (the dstack OVMF is not in the fixture);
	// the quote's value is the fixture's two-pass candidate.
	if hex.EncodeToString(body.GetMrTd()) != liteMRTDTwoPass {
		t.Errorf("quote MRTD %x, want the two-pass candidate %s", body.GetMrTd(), liteMRTDTwoPass)
	}
	wantRTMR := []string{
		"f8438db36b96f85d8752ff7f24a89ec05c79ec9eda2ba732c897fb970ca429365b7471b1c054cb84f17b1c2b23ba6640",
		"2023546e7f3b9d1228e274f70c44d481162540f8452544520a796a52f06879709b81a824a26792a7822327504b0d2aee",
		"4c1b739ed451a637b0f82642e48a5ea83925d23633c72e7385c8e9aca4175e133ed1625b7d92eb39edf509c27ff392dc",
		"6f24c170d0fd63fc2b1b53202eea47b013978437fa6982cf5e0438ff95c208994aaa0f4ebab2e3a66824b5b56869137e",
	}
	for r, w := range wantRTMR {
		if hex.EncodeToString(rtmrs[r][:]) != w {
			t.Errorf("RTMR%d %x, want tdx.json's %s", r, rtmrs[r], w)
		}
	}
}

// TestEventPreimages checks the preimages tdx.json rtmr_cases[0] spells
// out (EFI variables, Boot0000), not only their digests.
func TestEventPreimages(t *testing.T) {
	global, secdb := mustGUID(efiGlobalVariable), mustGUID(efiImageSecurityDatabase)
	for _, c := range []struct {
		got  []byte
		want string
	}{
		{EFIVariableData(global, "SecureBoot", nil), "61dfe48bca93d211aa0d00e098032b8c0a00000000000000000000000000000053006500630075007200650042006f006f007400"},
		{EFIVariableData(global, "PK", nil), "61dfe48bca93d211aa0d00e098032b8c0200000000000000000000000000000050004b00"},
		{EFIVariableData(global, "KEK", nil), "61dfe48bca93d211aa0d00e098032b8c030000000000000000000000000000004b0045004b00"},
		{EFIVariableData(secdb, "db", nil), "cbb219d73a3d9645a3bcdad00e67656f0200000000000000000000000000000064006200"},
		{EFIVariableData(secdb, "dbx", nil), "cbb219d73a3d9645a3bcdad00e67656f03000000000000000000000000000000640062007800"},
		{uiAppBootOption(), "090100002c0055006900410070007000000004071400c9bdb87cebf8344faaea3ee4af6516a10406140021aa2c4614760345836e8ab6f46623317fff0400"},
	} {
		if hex.EncodeToString(c.got) != c.want {
			t.Errorf("preimage\n got %x\nwant %s", c.got, c.want)
		}
	}
}

// TestCmdlineDigest pins the encoding of the RTMR2 command-line event:
// UTF-16LE of the line plus " initrd=initrd" when there is an initrd, and
// a terminating NUL.
func TestCmdlineDigest(t *testing.T) {
	if got, want := CmdlineDigest("console=hvc0", true), sha384([]byte("c\x00o\x00n\x00s\x00o\x00l\x00e\x00=\x00h\x00v\x00c\x000\x00 \x00i\x00n\x00i\x00t\x00r\x00d\x00=\x00i\x00n\x00i\x00t\x00r\x00d\x00\x00\x00")); got != want {
		t.Errorf("with initrd: %x, want %x", got, want)
	}
	if got, want := CmdlineDigest("a", false), sha384([]byte("a\x00\x00\x00")); got != want {
		t.Errorf("without initrd: %x, want %x", got, want)
	}
}
