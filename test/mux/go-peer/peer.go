// A yamux peer built on HashiCorp's Go yamux (Debian's golang-github-hashicorp-yamux-dev), for
// the interop tests in test/mux/go-interop.test.ts. It dials a Unix socket, runs a yamux session
// in the role it is given, and serves streams the Node side opens: each stream's first line is a
// command, answered on that stream. Some commands make it open streams of its own towards Node.
//
//	peer -socket /path -role client|server [-backlog 256]
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"math/rand"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

var (
	session      *yamux.Session
	acceptGate   sync.Mutex
	stallRelease = make(chan struct{})
	releaseOnce  sync.Once
	lastReset    = make(chan string, 16)
)

func main() {
	socket := flag.String("socket", "", "the Unix socket to dial")
	role := flag.String("role", "client", "client or server")
	backlog := flag.Int("backlog", 256, "AcceptBacklog")
	flag.Parse()
	conn, err := net.Dial("unix", *socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	config := yamux.DefaultConfig()
	config.AcceptBacklog = *backlog
	// A short keepalive: every answer our Node peer owes is checked all along.
	config.KeepAliveInterval = 100 * time.Millisecond
	config.LogOutput = os.Stderr
	if *role == "server" {
		session, err = yamux.Server(conn, config)
	} else {
		session, err = yamux.Client(conn, config)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "session:", err)
		os.Exit(1)
	}
	for {
		acceptGate.Lock()
		acceptGate.Unlock()
		stream, err := session.AcceptStream()
		if err != nil {
			if err != yamux.ErrSessionShutdown {
				fmt.Fprintln(os.Stderr, "accept:", err)
			}
			os.Exit(0)
		}
		go serve(stream)
	}
}

// readLine reads one line a byte at a time, so nothing after it is consumed.
func readLine(r io.Reader) (string, error) {
	var line []byte
	one := make([]byte, 1)
	for {
		n, err := r.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				return string(line), nil
			}
			line = append(line, one[0])
		}
		if err != nil {
			return string(line), err
		}
	}
}

func reply(stream *yamux.Stream, format string, args ...interface{}) {
	fmt.Fprintf(stream, format+"\n", args...)
	stream.Close()
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func randomBytes(seed int64, n int) []byte {
	data := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(data)
	return data
}

func serve(stream *yamux.Stream) {
	line, err := readLine(stream)
	if err != nil {
		stream.Close()
		return
	}
	words := strings.Fields(line)
	if len(words) == 0 {
		reply(stream, "err empty command")
		return
	}
	arg := func(i int) int {
		if i >= len(words) {
			return 0
		}
		n, _ := strconv.Atoi(words[i])
		return n
	}
	switch words[0] {
	case "echo":
		io.Copy(stream, stream)
		stream.Close()
	case "sha":
		data, _ := ioutil.ReadAll(stream)
		reply(stream, "%d %s", len(data), digest(data))
	case "stall":
		<-stallRelease
		data, _ := ioutil.ReadAll(stream)
		reply(stream, "%d %s", len(data), digest(data))
	case "release":
		releaseOnce.Do(func() { close(stallRelease) })
		reply(stream, "ok")
	case "wait-reset":
		fmt.Fprintf(stream, "waiting\n")
		_, err := io.Copy(ioutil.Discard, stream)
		if err == nil {
			err = io.EOF
		}
		lastReset <- err.Error()
		stream.Close()
	case "last-reset":
		select {
		case text := <-lastReset:
			reply(stream, "%s", text)
		case <-time.After(5 * time.Second):
			reply(stream, "none")
		}
	case "ping":
		rtt, err := session.Ping()
		if err != nil {
			reply(stream, "err %v", err)
		} else {
			reply(stream, "ok %d", rtt.Nanoseconds())
		}
	case "goaway":
		if err := session.GoAway(); err != nil {
			reply(stream, "err %v", err)
		} else {
			reply(stream, "ok")
		}
	case "try-open":
		if opened, err := session.OpenStream(); err != nil {
			reply(stream, "err %v", err)
		} else {
			opened.Close()
			reply(stream, "opened")
		}
	case "hold":
		acceptGate.Lock()
		reply(stream, "held")
	case "unhold":
		acceptGate.Unlock()
		reply(stream, "ok")
	case "xchg":
		reply(stream, "%s", together(arg(1), func(i int) error { return exchange(i, arg(2)) }))
	case "half":
		reply(stream, "%s", together(arg(1), func(i int) error { return halfClose(i, arg(2)) }))
	case "stall-write":
		stallWrite(stream, arg(1))
	case "open-many":
		resets, oks := 0, 0
		var lock sync.Mutex
		result := together(arg(1), func(i int) error {
			err := hello()
			lock.Lock()
			defer lock.Unlock()
			if err == yamux.ErrConnectionReset {
				resets++
				return nil
			}
			if err == nil {
				oks++
			}
			return err
		})
		reply(stream, "%s %d reset %d", result, oks, resets)
	default:
		reply(stream, "err unknown command %q", words[0])
	}
}

// together runs count jobs at once and says "ok" or the first failure.
func together(count int, job func(i int) error) string {
	errs := make(chan error, count)
	for i := 0; i < count; i++ {
		go func(i int) { errs <- job(i) }(i)
	}
	var first error
	for i := 0; i < count; i++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return "fail " + first.Error()
	}
	return "ok"
}

// exchange: we send n random bytes while Node sends n of its own; Node answers with the sha256 of
// what it received and of what it sent, then ends; we check both and close.
func exchange(i int, n int) error {
	stream, err := session.OpenStream()
	if err != nil {
		return err
	}
	defer stream.Close()
	size := n/2 + rand.Intn(n/2+1)
	data := randomBytes(int64(i), size)
	go func() {
		fmt.Fprintf(stream, "xchg %d\n", size)
		stream.Write(data)
	}()
	received, err := ioutil.ReadAll(stream)
	if err != nil {
		return fmt.Errorf("stream %d: read: %v", stream.StreamID(), err)
	}
	if len(received) < size {
		return fmt.Errorf("stream %d: %d bytes, expected %d and the sums", stream.StreamID(), len(received), size)
	}
	sums := strings.Fields(string(received[size:]))
	if len(sums) != 2 || sums[0] != digest(data) || sums[1] != digest(received[:size]) {
		return fmt.Errorf("stream %d: sums differ: %q, ours %s %s", stream.StreamID(), sums, digest(data), digest(received[:size]))
	}
	return nil
}

// halfClose: we send n bytes and close (FIN) first; Node reads to the end, then answers with the
// sha256 of what it received. This yamux returns EOF to a reader after its own Close while
// nothing is buffered, so we read again until the answer is complete.
func halfClose(i int, n int) error {
	stream, err := session.OpenStream()
	if err != nil {
		return err
	}
	data := randomBytes(int64(1000+i), n/2+rand.Intn(n/2+1))
	fmt.Fprintf(stream, "half %d\n", len(data))
	stream.Write(data)
	stream.Close()
	var answer bytes.Buffer
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.HasSuffix(answer.Bytes(), []byte("\n")) {
		if time.Now().After(deadline) {
			return fmt.Errorf("stream %d: no answer after our FIN (got %q)", stream.StreamID(), answer.String())
		}
		chunk := make([]byte, 256)
		k, _ := stream.Read(chunk)
		answer.Write(chunk[:k])
		if k == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if strings.TrimSpace(answer.String()) != digest(data) {
		return fmt.Errorf("stream %d: Node received %q, we sent %s", stream.StreamID(), answer.String(), digest(data))
	}
	return nil
}

// stallWrite: we open a stream and write n bytes to it, which Node does not read yet; we report
// how much went out before the window closed, then write the rest once Node reads.
func stallWrite(control *yamux.Stream, n int) {
	stream, err := session.OpenStream()
	if err != nil {
		reply(control, "err %v", err)
		return
	}
	data := randomBytes(7, n)
	header := []byte(fmt.Sprintf("stall %d %s\n", n, digest(data)))
	all := append(header, data...)
	stream.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	written, err := stream.Write(all)
	reply(control, "wrote %d %v", written, err)
	stream.SetWriteDeadline(time.Time{})
	stream.Write(all[written:])
	stream.Close()
}

// hello: a stream that says hello and waits for a line; a stream Node refuses fails with
// ErrConnectionReset.
func hello() error {
	stream, err := session.OpenStream()
	if err != nil {
		return err
	}
	defer stream.Close()
	if _, err := fmt.Fprintf(stream, "hello\n"); err != nil {
		return err
	}
	stream.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := readLine(stream)
	if err != nil {
		return err
	}
	if line != "hi" {
		return fmt.Errorf("answer %q", line)
	}
	return nil
}
