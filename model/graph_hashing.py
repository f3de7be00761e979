"""model/hashing.py's name -> (slot, sign) as TensorFlow ops, so a served graph hashes raw names.

TensorFlow has no BLAKE2b op, so this is BLAKE2b (RFC 7693, unkeyed, 8-byte digest) written in
uint64 tensor arithmetic, vectorised over a batch of names: every name padded to the longest
name's 128-byte blocks, the compression run block by block in a `tf.while_loop`, each name's
state kept only for the blocks it has. Equal to `hashlib.blake2b(name, digest_size=8)` on any
bytes (tests/core/test_export.py holds it to hashlib with hypothesis).
"""

from __future__ import annotations

import tensorflow as tf

_IV = (0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
       0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179)
_SIGMA = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
          (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3),
          (11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4),
          (7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8),
          (9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13),
          (2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9),
          (12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11),
          (13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10),
          (6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5),
          (10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0))
_BLOCK = 128
_DIGEST_BYTES = 8


def _u64(value: int) -> tf.Tensor:
    return tf.constant(value, tf.uint64)


def _rotr(x: tf.Tensor, n: int) -> tf.Tensor:
    return tf.bitwise.bitwise_or(tf.bitwise.right_shift(x, _u64(n)),
                                 tf.bitwise.left_shift(x, _u64(64 - n)))


def _mix(v: list, a: int, b: int, c: int, d: int, x: tf.Tensor, y: tf.Tensor) -> None:
    xor = tf.bitwise.bitwise_xor
    v[a] = v[a] + v[b] + x
    v[d] = _rotr(xor(v[d], v[a]), 32)
    v[c] = v[c] + v[d]
    v[b] = _rotr(xor(v[b], v[c]), 24)
    v[a] = v[a] + v[b] + y
    v[d] = _rotr(xor(v[d], v[a]), 16)
    v[c] = v[c] + v[d]
    v[b] = _rotr(xor(v[b], v[c]), 63)


def _compress(h: list, m: list, t: tf.Tensor, final: tf.Tensor) -> list:
    xor = tf.bitwise.bitwise_xor
    ones = tf.ones_like(t)
    v = list(h) + [_u64(iv) * ones for iv in _IV]
    v[12] = xor(v[12], t)  # the high word of the byte counter is 0: names are < 2**64 bytes
    v[14] = tf.where(final, tf.bitwise.invert(v[14]), v[14])
    for r in range(12):
        s = _SIGMA[r % 10]
        _mix(v, 0, 4, 8, 12, m[s[0]], m[s[1]])
        _mix(v, 1, 5, 9, 13, m[s[2]], m[s[3]])
        _mix(v, 2, 6, 10, 14, m[s[4]], m[s[5]])
        _mix(v, 3, 7, 11, 15, m[s[6]], m[s[7]])
        _mix(v, 0, 5, 10, 15, m[s[8]], m[s[9]])
        _mix(v, 1, 6, 11, 12, m[s[10]], m[s[11]])
        _mix(v, 2, 7, 8, 13, m[s[12]], m[s[13]])
        _mix(v, 3, 4, 9, 14, m[s[14]], m[s[15]])
    return [xor(xor(h[i], v[i]), v[i + 8]) for i in range(8)]


def blake2b_64(names: tf.Tensor) -> tf.Tensor:
    """uint64 [n]: each name's 8-byte BLAKE2b digest read little-endian (as model/hashing.py)."""
    names = tf.reshape(tf.convert_to_tensor(names, tf.string), [-1])
    n = tf.shape(names)[0]
    length = tf.cast(tf.strings.length(names, unit="BYTE"), tf.int64)
    blocks = tf.maximum((length + _BLOCK - 1) // _BLOCK, 1)  # the empty name is one zero block
    n_blocks = tf.maximum(tf.reduce_max(tf.concat([blocks, [1]], 0)), 1)
    padded = n_blocks * _BLOCK
    zeros = tf.strings.reduce_join(tf.fill([padded], "\x00"))
    pad = tf.strings.substr(tf.fill([n], zeros), tf.zeros([n], tf.int64), padded - length)
    words = tf.bitcast(tf.io.decode_raw(names + pad, tf.int64, little_endian=True), tf.uint64)
    words = tf.reshape(words, tf.stack([tf.cast(n, tf.int64), n_blocks, _BLOCK // 8]))
    ones = tf.ones([n], tf.uint64)
    h0 = [_u64(iv) * ones for iv in _IV]
    h0[0] = tf.bitwise.bitwise_xor(h0[0], _u64(0x01010000 ^ _DIGEST_BYTES))

    def step(j, *h):
        final = tf.equal(j, blocks - 1)
        t = tf.where(final, length, (j + 1) * _BLOCK)
        m = tf.unstack(tf.gather(words, j, axis=1), num=_BLOCK // 8, axis=1)
        new = _compress(list(h), m, tf.cast(t, tf.uint64), final)
        active = j < blocks
        return (j + 1, *[tf.where(active, a, b) for a, b in zip(new, h)])

    out = tf.while_loop(lambda j, *h: j < n_blocks, step, (tf.constant(0, tf.int64), *h0))
    return out[1]


def slots_and_signs(names: tf.Tensor, width: int) -> tuple[tf.Tensor, tf.Tensor]:
    """int64 slots in [0, width) and float64 signs of `names`, as FeatureHasher.slot gives."""
    h = blake2b_64(names)
    slots = tf.cast(h % _u64(width), tf.int64)
    top = tf.bitwise.right_shift(h, _u64(63))
    return slots, tf.where(tf.equal(top, _u64(1)), tf.constant(1.0, tf.float64),
                           tf.constant(-1.0, tf.float64))
