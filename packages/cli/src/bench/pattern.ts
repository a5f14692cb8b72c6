/**
 * The data every throughput cell sends: a random pattern of an odd period, so that a lost,
 * repeated or reordered piece of any size shifts everything after it. The receiver compares each
 * piece it gets with the pattern at its running offset (a memcmp), and at the end its byte count
 * must equal the sender's: only then do the bytes count as received and verified.
 */
/** Odd, and not a multiple of any power-of-two chunk. */
export const PERIOD = (1 << 20) + 4099;

export class Pattern {
  /** PERIOD bytes, then the first `extra` bytes again, so any piece up to `extra` is contiguous. */
  readonly bytes: Buffer;

  /** Both ends build the same pattern from the same `seed` (xorshift32). */
  constructor(
    readonly extra: number,
    readonly seed: number,
  ) {
    // Whole 32-bit words, filled past PERIOD and then overwritten by the copy below.
    const words = new Uint32Array(Math.ceil((PERIOD + extra) / 4));
    let x = seed >>> 0 || 0x9e3779b9;
    for (let i = 0; i * 4 < PERIOD + 3; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      words[i] = x;
    }
    this.bytes = Buffer.from(words.buffer, 0, PERIOD + extra);
    for (let copied = 0; copied < extra; copied += PERIOD) {
      this.bytes.copy(this.bytes, PERIOD + copied, 0, Math.min(PERIOD, extra - copied));
    }
  }

  /** `length` bytes of the stream starting at stream offset `offset` (mod PERIOD), without copying. */
  slice(offset: number, length: number): Buffer {
    return this.bytes.subarray(offset, offset + length);
  }
}

/** Checks a byte stream against the pattern, piece by piece. */
export class Verifier {
  /** Bytes received and found equal to the pattern. */
  verified = 0;
  private offset = 0;
  failure: string | null = null;

  constructor(private readonly pattern: Pattern) {}

  /** Returns false (and remembers why) at the first byte that differs. */
  check(piece: Buffer): boolean {
    if (this.failure) return false;
    const pattern = this.pattern;
    let done = 0;
    while (done < piece.length) {
      const length = Math.min(piece.length - done, pattern.extra);
      const expected = pattern.bytes.subarray(this.offset, this.offset + length);
      const got = done === 0 && length === piece.length ? piece : piece.subarray(done, done + length);
      if (!got.equals(expected)) {
        this.failure = `the bytes received differ from the bytes sent at stream offset ${this.verified + done}`;
        return false;
      }
      done += length;
      this.offset = (this.offset + length) % PERIOD;
    }
    this.verified += piece.length;
    return true;
  }
}
