/*
 * ioswarm._speedups: the hot loops of snapshot import and export, in C.
 *
 * Every function here has a pure-Python twin (ioswarm.core.statehash, ioswarm.core.snapshot)
 * that defines the result; the tests compare both on random input. Nothing here does I/O.
 *
 *   keccak256(data) -> bytes
 *       Keccak-256 as Ethereum uses it (original padding 0x01, not SHA3's 0x06).
 *   keccak_sum(buf, start, count, stride, skip) -> bytes
 *       sum over i < count of keccak256(buf[start + i*stride + skip : start + (i+1)*stride]),
 *       modulo 2**256, as 32 big-endian bytes: the state-hash contribution of a run of
 *       equal-sized snapshot entries (skip=1 drops each entry's marker byte). Releases the GIL.
 *   keccak_sum_list(records) -> bytes
 *       the same sum over a list of bytes-like objects.
 *   strided_slices(buf, start, count, stride, offset, length) -> list[bytes]
 *       [buf[start + i*stride + offset : start + i*stride + offset + length] for i < count]
 *   encode_entries(prefix, items, max_bytes) -> (bytes, int)
 *       IOSWSNAP entries `prefix | key_len u32 BE | key | val_len u32 BE | value` for the items
 *       pulled from the iterator `items` until the output reaches max_bytes or the iterator
 *       ends; returns the bytes and how many entries they hold (snapshot export).
 *   same_layout(buf, first, size, head, tail_at, room) -> int
 *       how many of the `room` records of `size` bytes after the one at `first` repeat its
 *       first `head` bytes and its 4 bytes at `tail_at` (marker, namespace, key length and
 *       value length of a snapshot entry).
 *
 * Keccak-f[1600] (FIPS 202: theta, rho and pi, chi, iota) is written out lane by lane, with
 * the state in 25 locals, so one round compiles to straight-line register code. keccak_sum
 * hashes four records at a time with AVX2 when the CPU has it (KECCAK_LANES says 4 or 1): the
 * records of a run have equal length, so their four states advance in lockstep.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define RATE 136          /* Keccak-256: 1600 - 2 * 256 bits, in bytes */
#define DIGEST 32
#define GIL_FREE_BYTES 65536  /* below this, releasing the GIL costs more than it frees */

static const uint64_t ROUND_CONSTANTS[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL,
    0x8000000080008000ULL, 0x000000000000808bULL, 0x0000000080000001ULL,
    0x8000000080008081ULL, 0x8000000000008009ULL, 0x000000000000008aULL,
    0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL,
    0x8000000000008003ULL, 0x8000000000008002ULL, 0x8000000000000080ULL,
    0x000000000000800aULL, 0x800000008000000aULL, 0x8000000080008081ULL,
    0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

static inline uint64_t rol64(uint64_t x, int s) { return (x << s) | (x >> (64 - s)); }

/* Lane (x, y) of the state is s[x + 5y]; aXY, bXY name lanes, c and d are theta's columns. */
static void keccak_f1600(uint64_t s[25]) {
    uint64_t a00 = s[0], a10 = s[1], a20 = s[2], a30 = s[3], a40 = s[4], a01 = s[5], a11 = s[6],
        a21 = s[7], a31 = s[8], a41 = s[9], a02 = s[10], a12 = s[11], a22 = s[12], a32 = s[13],
        a42 = s[14], a03 = s[15], a13 = s[16], a23 = s[17], a33 = s[18], a43 = s[19], a04 = s[20],
        a14 = s[21], a24 = s[22], a34 = s[23], a44 = s[24];
    uint64_t c0, c1, c2, c3, c4, d0, d1, d2, d3, d4;
    uint64_t b00, b10, b20, b30, b40, b01, b11, b21, b31, b41, b02, b12, b22, b32, b42, b03, b13,
        b23, b33, b43, b04, b14, b24, b34, b44;
    for (int round = 0; round < 24; round++) {
        c0 = a00 ^ a01 ^ a02 ^ a03 ^ a04;
        c1 = a10 ^ a11 ^ a12 ^ a13 ^ a14;
        c2 = a20 ^ a21 ^ a22 ^ a23 ^ a24;
        c3 = a30 ^ a31 ^ a32 ^ a33 ^ a34;
        c4 = a40 ^ a41 ^ a42 ^ a43 ^ a44;
        d0 = c4 ^ rol64(c1, 1);
        d1 = c0 ^ rol64(c2, 1);
        d2 = c1 ^ rol64(c3, 1);
        d3 = c2 ^ rol64(c4, 1);
        d4 = c3 ^ rol64(c0, 1);
        b00 = (a00 ^ d0);
        b13 = rol64(a01 ^ d0, 36);
        b21 = rol64(a02 ^ d0, 3);
        b34 = rol64(a03 ^ d0, 41);
        b42 = rol64(a04 ^ d0, 18);
        b02 = rol64(a10 ^ d1, 1);
        b10 = rol64(a11 ^ d1, 44);
        b23 = rol64(a12 ^ d1, 10);
        b31 = rol64(a13 ^ d1, 45);
        b44 = rol64(a14 ^ d1, 2);
        b04 = rol64(a20 ^ d2, 62);
        b12 = rol64(a21 ^ d2, 6);
        b20 = rol64(a22 ^ d2, 43);
        b33 = rol64(a23 ^ d2, 15);
        b41 = rol64(a24 ^ d2, 61);
        b01 = rol64(a30 ^ d3, 28);
        b14 = rol64(a31 ^ d3, 55);
        b22 = rol64(a32 ^ d3, 25);
        b30 = rol64(a33 ^ d3, 21);
        b43 = rol64(a34 ^ d3, 56);
        b03 = rol64(a40 ^ d4, 27);
        b11 = rol64(a41 ^ d4, 20);
        b24 = rol64(a42 ^ d4, 39);
        b32 = rol64(a43 ^ d4, 8);
        b40 = rol64(a44 ^ d4, 14);
        a00 = b00 ^ (~b10 & b20);
        a10 = b10 ^ (~b20 & b30);
        a20 = b20 ^ (~b30 & b40);
        a30 = b30 ^ (~b40 & b00);
        a40 = b40 ^ (~b00 & b10);
        a01 = b01 ^ (~b11 & b21);
        a11 = b11 ^ (~b21 & b31);
        a21 = b21 ^ (~b31 & b41);
        a31 = b31 ^ (~b41 & b01);
        a41 = b41 ^ (~b01 & b11);
        a02 = b02 ^ (~b12 & b22);
        a12 = b12 ^ (~b22 & b32);
        a22 = b22 ^ (~b32 & b42);
        a32 = b32 ^ (~b42 & b02);
        a42 = b42 ^ (~b02 & b12);
        a03 = b03 ^ (~b13 & b23);
        a13 = b13 ^ (~b23 & b33);
        a23 = b23 ^ (~b33 & b43);
        a33 = b33 ^ (~b43 & b03);
        a43 = b43 ^ (~b03 & b13);
        a04 = b04 ^ (~b14 & b24);
        a14 = b14 ^ (~b24 & b34);
        a24 = b24 ^ (~b34 & b44);
        a34 = b34 ^ (~b44 & b04);
        a44 = b44 ^ (~b04 & b14);
        a00 ^= ROUND_CONSTANTS[round];
    }
    s[0] = a00; s[1] = a10; s[2] = a20; s[3] = a30; s[4] = a40;
    s[5] = a01; s[6] = a11; s[7] = a21; s[8] = a31; s[9] = a41;
    s[10] = a02; s[11] = a12; s[12] = a22; s[13] = a32; s[14] = a42;
    s[15] = a03; s[16] = a13; s[17] = a23; s[18] = a33; s[19] = a43;
    s[20] = a04; s[21] = a14; s[22] = a24; s[23] = a34; s[24] = a44;
}

static inline uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Absorb whole RATE-byte blocks. */
static inline void absorb_block(uint64_t a[25], const unsigned char *p) {
    for (int i = 0; i < RATE / 8; i++) a[i] ^= load_le64(p + 8 * i);
    keccak_f1600(a);
}

/* Keccak-256 of data; the digest's 4 lanes are left in a[0..3] (little-endian byte order). */
static void keccak256_lanes(const unsigned char *data, Py_ssize_t len, uint64_t a[25]) {
    unsigned char last[RATE];
    memset(a, 0, 25 * sizeof(uint64_t));
    while (len >= RATE) {
        absorb_block(a, data);
        data += RATE;
        len -= RATE;
    }
    memset(last, 0, RATE);
    memcpy(last, data, (size_t)len);
    last[len] ^= 0x01;
    last[RATE - 1] ^= 0x80;
    absorb_block(a, last);
}

/* Four messages at once: the same permutation on 4-lane AVX2 vectors, lane k holding message k.
 * Compiled for AVX2 by function attribute and used only when the CPU reports AVX2, so the
 * module still runs on any x86-64. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_X4 1
#define KECCAK_AVX2 __attribute__((target("avx2")))
#define XOR4(a, b) _mm256_xor_si256((a), (b))
#define ANDN4(a, b) _mm256_andnot_si256((a), (b)) /* ~a & b */
#define ROL4(x, n) _mm256_or_si256(_mm256_slli_epi64((x), (n)), _mm256_srli_epi64((x), 64 - (n)))

KECCAK_AVX2 static void keccak_f1600_x4(__m256i s[25]) {
    __m256i a00 = s[0], a10 = s[1], a20 = s[2], a30 = s[3], a40 = s[4], a01 = s[5], a11 = s[6],
        a21 = s[7], a31 = s[8], a41 = s[9], a02 = s[10], a12 = s[11], a22 = s[12], a32 = s[13],
        a42 = s[14], a03 = s[15], a13 = s[16], a23 = s[17], a33 = s[18], a43 = s[19], a04 = s[20],
        a14 = s[21], a24 = s[22], a34 = s[23], a44 = s[24];
    __m256i c0, c1, c2, c3, c4, d0, d1, d2, d3, d4;
    __m256i b00, b10, b20, b30, b40, b01, b11, b21, b31, b41, b02, b12, b22, b32, b42, b03, b13,
        b23, b33, b43, b04, b14, b24, b34, b44;
    for (int round = 0; round < 24; round++) {
        c0 = XOR4(XOR4(XOR4(a00, a01), XOR4(a02, a03)), a04);
        c1 = XOR4(XOR4(XOR4(a10, a11), XOR4(a12, a13)), a14);
        c2 = XOR4(XOR4(XOR4(a20, a21), XOR4(a22, a23)), a24);
        c3 = XOR4(XOR4(XOR4(a30, a31), XOR4(a32, a33)), a34);
        c4 = XOR4(XOR4(XOR4(a40, a41), XOR4(a42, a43)), a44);
        d0 = XOR4(c4, ROL4(c1, 1));
        d1 = XOR4(c0, ROL4(c2, 1));
        d2 = XOR4(c1, ROL4(c3, 1));
        d3 = XOR4(c2, ROL4(c4, 1));
        d4 = XOR4(c3, ROL4(c0, 1));
        b00 = XOR4(a00, d0);
        b13 = ROL4(XOR4(a01, d0), 36);
        b21 = ROL4(XOR4(a02, d0), 3);
        b34 = ROL4(XOR4(a03, d0), 41);
        b42 = ROL4(XOR4(a04, d0), 18);
        b02 = ROL4(XOR4(a10, d1), 1);
        b10 = ROL4(XOR4(a11, d1), 44);
        b23 = ROL4(XOR4(a12, d1), 10);
        b31 = ROL4(XOR4(a13, d1), 45);
        b44 = ROL4(XOR4(a14, d1), 2);
        b04 = ROL4(XOR4(a20, d2), 62);
        b12 = ROL4(XOR4(a21, d2), 6);
        b20 = ROL4(XOR4(a22, d2), 43);
        b33 = ROL4(XOR4(a23, d2), 15);
        b41 = ROL4(XOR4(a24, d2), 61);
        b01 = ROL4(XOR4(a30, d3), 28);
        b14 = ROL4(XOR4(a31, d3), 55);
        b22 = ROL4(XOR4(a32, d3), 25);
        b30 = ROL4(XOR4(a33, d3), 21);
        b43 = ROL4(XOR4(a34, d3), 56);
        b03 = ROL4(XOR4(a40, d4), 27);
        b11 = ROL4(XOR4(a41, d4), 20);
        b24 = ROL4(XOR4(a42, d4), 39);
        b32 = ROL4(XOR4(a43, d4), 8);
        b40 = ROL4(XOR4(a44, d4), 14);
        a00 = XOR4(b00, ANDN4(b10, b20));
        a10 = XOR4(b10, ANDN4(b20, b30));
        a20 = XOR4(b20, ANDN4(b30, b40));
        a30 = XOR4(b30, ANDN4(b40, b00));
        a40 = XOR4(b40, ANDN4(b00, b10));
        a01 = XOR4(b01, ANDN4(b11, b21));
        a11 = XOR4(b11, ANDN4(b21, b31));
        a21 = XOR4(b21, ANDN4(b31, b41));
        a31 = XOR4(b31, ANDN4(b41, b01));
        a41 = XOR4(b41, ANDN4(b01, b11));
        a02 = XOR4(b02, ANDN4(b12, b22));
        a12 = XOR4(b12, ANDN4(b22, b32));
        a22 = XOR4(b22, ANDN4(b32, b42));
        a32 = XOR4(b32, ANDN4(b42, b02));
        a42 = XOR4(b42, ANDN4(b02, b12));
        a03 = XOR4(b03, ANDN4(b13, b23));
        a13 = XOR4(b13, ANDN4(b23, b33));
        a23 = XOR4(b23, ANDN4(b33, b43));
        a33 = XOR4(b33, ANDN4(b43, b03));
        a43 = XOR4(b43, ANDN4(b03, b13));
        a04 = XOR4(b04, ANDN4(b14, b24));
        a14 = XOR4(b14, ANDN4(b24, b34));
        a24 = XOR4(b24, ANDN4(b34, b44));
        a34 = XOR4(b34, ANDN4(b44, b04));
        a44 = XOR4(b44, ANDN4(b04, b14));
        a00 = XOR4(a00, _mm256_set1_epi64x((long long)ROUND_CONSTANTS[round]));
    }
    s[0] = a00; s[1] = a10; s[2] = a20; s[3] = a30; s[4] = a40;
    s[5] = a01; s[6] = a11; s[7] = a21; s[8] = a31; s[9] = a41;
    s[10] = a02; s[11] = a12; s[12] = a22; s[13] = a32; s[14] = a42;
    s[15] = a03; s[16] = a13; s[17] = a23; s[18] = a33; s[19] = a43;
    s[20] = a04; s[21] = a14; s[22] = a24; s[23] = a34; s[24] = a44;
}

KECCAK_AVX2 static inline __m256i gather_lane(const unsigned char *const m[4], Py_ssize_t at) {
    return _mm256_set_epi64x((long long)load_le64(m[3] + at), (long long)load_le64(m[2] + at),
                             (long long)load_le64(m[1] + at), (long long)load_le64(m[0] + at));
}

/* Keccak-256 of four messages of `len` bytes each; message k's digest lanes go to out[k]. */
KECCAK_AVX2 static void keccak256_x4(const unsigned char *const m[4], Py_ssize_t len,
                                     uint64_t out[4][4]) {
    __m256i s[25];
    unsigned char last_bytes[4][RATE];
    const unsigned char *last[4];
    for (int i = 0; i < 25; i++) s[i] = _mm256_setzero_si256();
    Py_ssize_t off = 0;
    for (; len - off >= RATE; off += RATE) {
        for (int i = 0; i < RATE / 8; i++)
            s[i] = _mm256_xor_si256(s[i], gather_lane(m, off + 8 * i));
        keccak_f1600_x4(s);
    }
    for (int k = 0; k < 4; k++) {
        memset(last_bytes[k], 0, RATE);
        memcpy(last_bytes[k], m[k] + off, (size_t)(len - off));
        last_bytes[k][len - off] ^= 0x01;
        last_bytes[k][RATE - 1] ^= 0x80;
        last[k] = last_bytes[k];
    }
    for (int i = 0; i < RATE / 8; i++) s[i] = _mm256_xor_si256(s[i], gather_lane(last, 8 * i));
    keccak_f1600_x4(s);
    for (int i = 0; i < 4; i++) {
        uint64_t v[4];
        _mm256_storeu_si256((__m256i *)v, s[i]);
        for (int k = 0; k < 4; k++) out[k][i] = v[k];
    }
}
#endif

static void lanes_to_digest(const uint64_t a[25], unsigned char out[DIGEST]) {
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 8; b++) out[8 * i + b] = (unsigned char)(a[i] >> (8 * b));
}

/* acc (4 limbs, acc[0] least significant) += the digest read as a 256-bit big-endian number. */
static inline void add_digest(uint64_t acc[4], const uint64_t a[4]) {
    /* digest byte k is byte (k % 8) of lane k / 8; big-endian limb 3 is digest bytes 0..7. */
    uint64_t carry = 0;
    for (int limb = 0; limb < 4; limb++) {
        uint64_t lane = a[3 - limb], v = 0;
        for (int b = 0; b < 8; b++) v = (v << 8) | ((lane >> (8 * b)) & 0xff);
        uint64_t s = acc[limb] + v;
        uint64_t c1 = s < v;
        uint64_t s2 = s + carry;
        uint64_t c2 = s2 < carry;
        acc[limb] = s2;
        carry = c1 | c2;
    }
}

static PyObject *acc_to_bytes(const uint64_t acc[4]) {
    unsigned char out[DIGEST];
    for (int limb = 0; limb < 4; limb++)
        for (int b = 0; b < 8; b++)
            out[8 * (3 - limb) + (7 - b)] = (unsigned char)(acc[limb] >> (8 * b));
    return PyBytes_FromStringAndSize((const char *)out, DIGEST);
}

/* True when `count` items of `stride` bytes from `start`, each using bytes [offset, offset +
 * length), lie inside a buffer of `size` bytes; sets ValueError otherwise. */
static int check_run(Py_ssize_t size, Py_ssize_t start, Py_ssize_t count, Py_ssize_t stride,
                     Py_ssize_t offset, Py_ssize_t length) {
    if (start < 0 || count < 0 || stride < 1 || offset < 0 || length < 0) {
        PyErr_SetString(PyExc_ValueError, "negative start, count, offset or length, or stride < 1");
        return 0;
    }
    if (count == 0) return 1;
    if (start > size || offset > size || length > size - offset ||
        (count - 1) > (size - start - offset - length) / stride ||
        start + offset + length > size) {
        PyErr_SetString(PyExc_ValueError, "run extends past the end of the buffer");
        return 0;
    }
    return 1;
}

static PyObject *py_keccak256(PyObject *self, PyObject *args) {
    Py_buffer data;
    uint64_t a[25];
    unsigned char out[DIGEST];
    if (!PyArg_ParseTuple(args, "y*:keccak256", &data)) return NULL;
    if (data.len >= GIL_FREE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        keccak256_lanes(data.buf, data.len, a);
        Py_END_ALLOW_THREADS
    } else {
        keccak256_lanes(data.buf, data.len, a);
    }
    PyBuffer_Release(&data);
    lanes_to_digest(a, out);
    return PyBytes_FromStringAndSize((const char *)out, DIGEST);
}

static int use_x4 = 0;  /* set at import when the CPU has AVX2 */

static void sum_run(const unsigned char *base, Py_ssize_t count, Py_ssize_t stride,
                    Py_ssize_t skip, uint64_t acc[4]) {
    uint64_t a[25];
    Py_ssize_t i = 0;
#ifdef HAVE_X4
    if (use_x4) {
        uint64_t out[4][4];
        for (; i + 4 <= count; i += 4) {
            const unsigned char *m[4];
            for (int k = 0; k < 4; k++) m[k] = base + (i + k) * stride + skip;
            keccak256_x4(m, stride - skip, out);
            for (int k = 0; k < 4; k++) add_digest(acc, out[k]);
        }
    }
#endif
    for (; i < count; i++) {
        keccak256_lanes(base + i * stride + skip, stride - skip, a);
        add_digest(acc, a);
    }
}

static PyObject *py_keccak_sum(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t start, count, stride, skip;
    uint64_t acc[4] = {0, 0, 0, 0};
    if (!PyArg_ParseTuple(args, "y*nnnn:keccak_sum", &buf, &start, &count, &stride, &skip))
        return NULL;
    if (skip < 0 || skip > stride) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "skip must lie in [0, stride]");
        return NULL;
    }
    if (!check_run(buf.len, start, count, stride, 0, stride)) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    const unsigned char *base = (const unsigned char *)buf.buf + start;
    if (count * stride >= GIL_FREE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        sum_run(base, count, stride, skip, acc);
        Py_END_ALLOW_THREADS
    } else {
        sum_run(base, count, stride, skip, acc);
    }
    PyBuffer_Release(&buf);
    return acc_to_bytes(acc);
}

static PyObject *py_keccak_sum_list(PyObject *self, PyObject *arg) {
    uint64_t acc[4] = {0, 0, 0, 0};
    uint64_t a[25];
    PyObject *seq = PySequence_Fast(arg, "keccak_sum_list expects a sequence of bytes");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(items[i], &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        keccak256_lanes(view.buf, view.len, a);
        PyBuffer_Release(&view);
        add_digest(acc, a);
    }
    Py_DECREF(seq);
    return acc_to_bytes(acc);
}

/* Sum of the Keccak-256 digests of the records `head | key_len u32 BE | key | val_len u32 BE |
 * value` built from parallel sequences of bytes (the state hash of one namespace's entries). */
static PyObject *py_keccak_sum_kv(PyObject *self, PyObject *args) {
    Py_buffer head;
    PyObject *keys_arg, *values_arg;
    uint64_t acc[4] = {0, 0, 0, 0};
    if (!PyArg_ParseTuple(args, "y*OO:keccak_sum_kv", &head, &keys_arg, &values_arg)) return NULL;
    PyObject *keys = PySequence_Fast(keys_arg, "keccak_sum_kv expects sequences of bytes");
    PyObject *values = keys ? PySequence_Fast(values_arg, "keccak_sum_kv expects sequences of bytes") : NULL;
    unsigned char *buf = NULL;
    PyObject *out = NULL;
    if (values == NULL) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys);
    if (PySequence_Fast_GET_SIZE(values) != n) {
        PyErr_SetString(PyExc_ValueError, "keccak_sum_kv: keys and values differ in length");
        goto done;
    }
    PyObject **ks = PySequence_Fast_ITEMS(keys), **vs = PySequence_Fast_ITEMS(values);
    Py_ssize_t total = 0, stride = -1;
    int same = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(ks[i]) || !PyBytes_Check(vs[i])) {
            PyErr_SetString(PyExc_TypeError, "keccak_sum_kv: keys and values must be bytes");
            goto done;
        }
        Py_ssize_t kl = PyBytes_GET_SIZE(ks[i]), vl = PyBytes_GET_SIZE(vs[i]);
        if ((unsigned long long)kl > 0xFFFFFFFFULL || (unsigned long long)vl > 0xFFFFFFFFULL) {
            PyErr_SetString(PyExc_ValueError, "key and value must each be shorter than 4 GiB");
            goto done;
        }
        Py_ssize_t rec = head.len + 8 + kl + vl;
        if (stride < 0) stride = rec;
        else if (rec != stride) same = 0;
        total += rec;
    }
    buf = PyMem_Malloc(total ? (size_t)total : 1);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    unsigned char *p = buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t kl = PyBytes_GET_SIZE(ks[i]), vl = PyBytes_GET_SIZE(vs[i]);
        memcpy(p, head.buf, (size_t)head.len);
        p += head.len;
        p[0] = (unsigned char)(kl >> 24), p[1] = (unsigned char)(kl >> 16);
        p[2] = (unsigned char)(kl >> 8), p[3] = (unsigned char)kl;
        memcpy(p + 4, PyBytes_AS_STRING(ks[i]), (size_t)kl);
        p += 4 + kl;
        p[0] = (unsigned char)(vl >> 24), p[1] = (unsigned char)(vl >> 16);
        p[2] = (unsigned char)(vl >> 8), p[3] = (unsigned char)vl;
        memcpy(p + 4, PyBytes_AS_STRING(vs[i]), (size_t)vl);
        p += 4 + vl;
    }
    if (same && n) {
        sum_run(buf, n, stride, 0, acc);
    } else {
        uint64_t a[25];
        p = buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t rec = head.len + 8 + PyBytes_GET_SIZE(ks[i]) + PyBytes_GET_SIZE(vs[i]);
            keccak256_lanes(p, rec, a);
            add_digest(acc, a);
            p += rec;
        }
    }
    out = acc_to_bytes(acc);
done:
    PyMem_Free(buf);
    Py_XDECREF(values);
    Py_XDECREF(keys);
    PyBuffer_Release(&head);
    return out;
}

static PyObject *py_strided_slices(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t start, count, stride, offset, length;
    if (!PyArg_ParseTuple(args, "y*nnnnn:strided_slices", &buf, &start, &count, &stride, &offset,
                          &length))
        return NULL;
    if (!check_run(buf.len, start, count, stride, offset, length)) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    PyObject *out = PyList_New(count);
    if (out == NULL) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    const char *p = (const char *)buf.buf + start + offset;
    for (Py_ssize_t i = 0; i < count; i++, p += stride) {
        PyObject *item = PyBytes_FromStringAndSize(p, length);
        if (item == NULL) {
            Py_DECREF(out);
            PyBuffer_Release(&buf);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    PyBuffer_Release(&buf);
    return out;
}

static PyObject *py_same_layout(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t first, size, head, tail_at, room;
    if (!PyArg_ParseTuple(args, "y*nnnnn:same_layout", &buf, &first, &size, &head, &tail_at,
                          &room))
        return NULL;
    if (head < 0 || tail_at < 0 || head > size || tail_at > size - 4 || room < 0) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "head and tail_at must lie inside one record");
        return NULL;
    }
    if (!check_run(buf.len, first, room + 1, size, 0, size)) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    const unsigned char *p0 = (const unsigned char *)buf.buf + first;
    Py_ssize_t n = 0;
    while (n < room) {
        const unsigned char *p = p0 + (n + 1) * size;
        if (memcmp(p, p0, (size_t)head) != 0 || memcmp(p + tail_at, p0 + tail_at, 4) != 0) break;
        n++;
    }
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t(n);
}

/* Append `n` bytes to a growing PyMem buffer; 0 and MemoryError on failure. */
static int buf_append(char **buf, Py_ssize_t *used, Py_ssize_t *cap, const void *src,
                      Py_ssize_t n) {
    if (*used + n > *cap) {
        Py_ssize_t want = *cap ? *cap : 4096;
        while (want < *used + n) want *= 2;
        char *grown = PyMem_Realloc(*buf, (size_t)want);
        if (grown == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        *buf = grown;
        *cap = want;
    }
    memcpy(*buf + *used, src, (size_t)n);
    *used += n;
    return 1;
}

static int append_field(char **buf, Py_ssize_t *used, Py_ssize_t *cap, PyObject *obj) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) return 0;
    if ((unsigned long long)view.len > 0xFFFFFFFFULL) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "key and value must each be shorter than 4 GiB");
        return 0;
    }
    unsigned char len_be[4] = {(unsigned char)(view.len >> 24), (unsigned char)(view.len >> 16),
                               (unsigned char)(view.len >> 8), (unsigned char)view.len};
    int ok = buf_append(buf, used, cap, len_be, 4) &&
             buf_append(buf, used, cap, view.buf, view.len);
    PyBuffer_Release(&view);
    return ok;
}

static PyObject *py_encode_entries(PyObject *self, PyObject *args) {
    Py_buffer prefix;
    PyObject *iter;
    Py_ssize_t max_bytes;
    if (!PyArg_ParseTuple(args, "y*On:encode_entries", &prefix, &iter, &max_bytes)) return NULL;
    if (!PyIter_Check(iter)) {
        PyBuffer_Release(&prefix);
        PyErr_SetString(PyExc_TypeError, "encode_entries expects an iterator of (key, value)");
        return NULL;
    }
    char *buf = NULL;
    Py_ssize_t used = 0, cap = 0, count = 0;
    PyObject *item;
    while (used < max_bytes && (item = PyIter_Next(iter)) != NULL) {
        int ok = PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2;
        if (!ok)
            PyErr_SetString(PyExc_TypeError, "encode_entries items must be (key, value) tuples");
        ok = ok && buf_append(&buf, &used, &cap, prefix.buf, prefix.len) &&
             append_field(&buf, &used, &cap, PyTuple_GET_ITEM(item, 0)) &&
             append_field(&buf, &used, &cap, PyTuple_GET_ITEM(item, 1));
        Py_DECREF(item);
        if (!ok) break;
        count++;
    }
    PyBuffer_Release(&prefix);
    PyObject *out = NULL;
    if (!PyErr_Occurred()) {
        PyObject *chunk = PyBytes_FromStringAndSize(buf ? buf : "", used);
        if (chunk != NULL) out = Py_BuildValue("(Nn)", chunk, count);
    }
    PyMem_Free(buf);
    return out;
}

static PyMethodDef METHODS[] = {
    {"keccak256", py_keccak256, METH_VARARGS, "Keccak-256 digest of a bytes-like object."},
    {"keccak_sum", py_keccak_sum, METH_VARARGS,
     "Sum mod 2**256 of the Keccak-256 digests of a strided run of records, 32 bytes BE."},
    {"keccak_sum_list", py_keccak_sum_list, METH_O,
     "Sum mod 2**256 of the Keccak-256 digests of a sequence of bytes, 32 bytes BE."},
    {"keccak_sum_kv", py_keccak_sum_kv, METH_VARARGS,
     "Sum mod 2**256 of the Keccak-256 digests of head|len|key|len|value records, 32 bytes BE."},
    {"strided_slices", py_strided_slices, METH_VARARGS,
     "List of equal-length slices taken at a fixed stride."},
    {"encode_entries", py_encode_entries, METH_VARARGS,
     "Encode (key, value) items behind a namespace prefix until max_bytes; (bytes, count)."},
    {"same_layout", py_same_layout, METH_VARARGS,
     "How many following records repeat the first record's head and length bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_speedups",
    .m_doc = "C versions of ioswarm's snapshot hot loops.",
    .m_size = -1,
    .m_methods = METHODS,
};

PyMODINIT_FUNC PyInit__speedups(void) {
#ifdef HAVE_X4
    __builtin_cpu_init();
    use_x4 = __builtin_cpu_supports("avx2");
#endif
    PyObject *module = PyModule_Create(&MODULE);
    if (module != NULL && PyModule_AddIntConstant(module, "KECCAK_LANES", use_x4 ? 4 : 1) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
