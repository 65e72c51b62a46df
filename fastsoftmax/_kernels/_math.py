"""The one place where exp, log and row reductions live.

numba from PyPI has no SVML, so ``np.exp`` inside a loop is a scalar libm call and the loop does
not vectorize. ``vexp`` below is a branch-free exp (Cody-Waite range reduction, a polynomial, and
2**k built from the float's exponent bits) that LLVM vectorizes to AVX2 code. Row reductions add
blocks in the row's dtype and the block sums in float64, so a float32 softmax row of 2**20
entries keeps ~2e-7 relative accuracy and a float64 row ~1e-14, whatever the thread count.

Summation order is written out, never left to the compiler: the flags below leave out
``reassoc``, and each block is added in explicit partial sums (entry j goes to lane j % lanes)
that a vectorized loop keeps in registers, combined in a fixed tree. With ``reassoc``
LLVM picks the order itself: the serial and the parallel kernel (separate compilations) could
differ, and a loop that also stores runs, when its runtime overlap check fails (an ``out`` a few
vectors after ``x``), a scalar fallback that sums in another order, so results moved by an ulp
with memory placement.

The loops are vectorized where they are compiled, as plain njit functions (checked with
``inspect_asm``: ymm registers). Under ``NUMBA_DISABLE_JIT=1`` the bit-cast intrinsics fall back
to NumPy, so the kernels, and the same polynomial exp and log, also run as plain Python (for
coverage and debugging; element by element, so only on small inputs). Plain Python rounds every
Horner step where the compiled code contracts it to an FMA: up to ~1.2 ulp instead of 1.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array

# fastmath flags for the kernels: never nnan/ninf (-inf logits are masks and NaN must propagate),
# and no reassoc: every sum is added in the order the source gives (see the module docstring).
FASTMATH = {"nsz", "arcp", "contract", "afn"}
# The exp itself is compiled without reassoc: Cody-Waite reduction must not be re-associated.
_EXP_FLAGS = {"nsz", "contract"}

# Row reductions add each block of BLOCK entries in the row's dtype in LANE_BYTES of partial sums
# (64 float32 or 32 float64 lanes: 8 ymm registers, like LLVM's own 4-way interleaved vector
# reductions; each lane sees 4 or 8 terms per block), then carry them over the blocks in float64
# lanes added pairwise at the end: error ~ (8 + n / BLOCK + 6) ulp of the float64 total, not n ulp.
BLOCK = 256
LANE_BYTES = 256


@intrinsic
def _pow2(typingctx, k):
    """2.0**k for an integral float k in the normal exponent range, in k's own float type.

    k + (bias + 2**mantissa_bits) puts k + bias in the low mantissa bits; shifting left by the
    mantissa width moves it into the exponent field. Float adds and integer shifts only: no
    float-to-int64 conversion, which AVX2 cannot vectorize.
    """
    if k not in (types.float32, types.float64):
        return None
    width, mant, bias = (32, 23, 127) if k == types.float32 else (64, 52, 1023)

    def codegen(context, builder, signature, args):
        fty = args[0].type
        ity = ir.IntType(width)
        biased = builder.fadd(args[0], ir.Constant(fty, float(bias + 2**mant)))
        bits = builder.shl(builder.bitcast(biased, ity), ir.Constant(ity, mant))
        return builder.bitcast(bits, fty)

    return k(k), codegen


@intrinsic
def _select(typingctx, cond, a, b):
    """``a if cond else b`` as one LLVM select, no branch: a branch in an inlined helper kept
    LLVM from vectorizing the loop around it (the exact exp passes ran scalar)."""
    if not (isinstance(cond, types.Boolean) and a == b and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, signature, args):
        c = context.cast(builder, args[0], signature.args[0], types.boolean)
        return builder.select(c, args[1], args[2])

    return a(cond, a, b), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma). The exp's multiply-adds are written out as these so
    that its rounding is the same wherever it is inlined, whatever the caller's fastmath flags
    (an inlined body takes the caller's; without ``contract`` the float64 exp was 1.13 ulp)."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, signature, args):
        fty = args[0].type
        name = "llvm.fma.f32" if a == types.float32 else "llvm.fma.f64"
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [fty] * 3), name)
        return builder.call(fma, args)

    return a(a, b, c), codegen


# float32: |r| <= ln2/2 after reduction; Taylor to r**7 leaves < 5.3e-9 relative truncation error.
_LN2_HI_32 = np.float32(0.693359375)  # 9 significant bits, so k * LN2_HI is exact
_LN2_LO_32 = np.float32(-2.12194440e-4)
_LOG2E_32 = np.float32(1.44269504088896341)
_XMAX_32 = np.float32(88.72283935546875)  # log(FLT_MAX)
_XMIN_32 = np.float32(-103.97208)  # log of the smallest subnormal


@njit(fastmath=_EXP_FLAGS, error_model="numpy", cache=True)
def _exp_f32(hi, lo):
    """exp(hi + lo) for float32 (|lo| << |hi|), ~1 ulp; 0 below ~-104, inf above ~88.72."""
    # no clamp of k needed: out of range (or NaN) only where a select below replaces the result,
    # and _pow2 is float adds and shifts (no float-to-int conversion that could be poison)
    k = np.floor(hi * _LOG2E_32 + np.float32(0.5))
    r = hi - k * _LN2_HI_32
    r = r - k * _LN2_LO_32 + lo
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    k1 = np.floor(k * np.float32(0.5))  # 2**k = 2**k1 * 2**k2, both normal: subnormal results too
    y = p * _pow2(k1) * _pow2(k - k1)
    y = np.float32(0.0) if hi < _XMIN_32 else y
    y = np.float32(np.inf) if hi > _XMAX_32 else y
    return y


# float64: Taylor to r**13 leaves < 4e-18 relative truncation error on |r| <= ln2/2.
_LN2_HI_64 = 6.93147180369123816490e-01  # fdlibm's split: k * LN2_HI exact for |k| < 2**11
_LN2_LO_64 = 1.90821492927058770002e-10
_LOG2E_64 = 1.44269504088896338700e00
_XMAX_64 = 709.782712893384  # log(DBL_MAX)
_XMIN_64 = -745.1332191019412  # log of the smallest subnormal
_C = tuple(1.0 / float(np.prod(np.arange(1, n + 1, dtype=np.float64))) for n in range(14))


@njit(fastmath=_EXP_FLAGS, error_model="numpy", cache=True, inline="always")
def _exp_f64(hi, lo):
    """exp(hi + lo) for float64 (|lo| << |hi|), ~1 ulp; 0 below ~-745, inf above ~709.78."""
    k = np.floor(_fma(hi, _LOG2E_64, 0.5))
    r = _fma(-k, _LN2_HI_64, hi)
    r = _fma(-k, _LN2_LO_64, r) + lo
    p = _C[13]
    p = _fma(p, r, _C[12])
    p = _fma(p, r, _C[11])
    p = _fma(p, r, _C[10])
    p = _fma(p, r, _C[9])
    p = _fma(p, r, _C[8])
    p = _fma(p, r, _C[7])
    p = _fma(p, r, _C[6])
    p = _fma(p, r, _C[5])
    p = _fma(p, r, _C[4])
    p = _fma(p, r, _C[3])
    p = _fma(p, r, _C[2])
    p = _fma(p, r, 1.0)
    p = _fma(p, r, 1.0)
    k1 = np.floor(k * 0.5)
    y = p * _pow2(k1) * _pow2(k - k1)
    y = _select(hi < _XMIN_64, 0.0, y)
    y = _select(hi > _XMAX_64, np.inf, y)
    return y


@intrinsic
def _magic_pow2(typingctx, t):
    """2.0**k from a float32 t whose low mantissa bits hold the biased exponent k + 127 (see
    ``_exp_shifted_f32``): the bits of t shifted into the exponent field. One integer shift."""
    if t != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.bitcast(args[0], i32), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return t(t), codegen


# exp_shifted for float32: u = (x - shift) * scale <= 0 in every caller (shift is the row maximum;
# masked entries above it are computed and discarded). u * log2(e) + MAGIC rounds to an integer
# n, left as n + 64 + 127 in the low mantissa bits (MAGIC = 1.5 * 2**23 + 64 + 127), which
# ``_magic_pow2`` turns into 2**(n + 64): a normal number for every n down to -190, so one
# scaling and a final product by 2**-64 give the subnormal results too (rounded once). r = u - n
# ln2 in two FMA steps (ln2 = LN2_HI - LN2_LO, LN2_HI of 21 significant bits); exp(r) = 1 + r q(r)
# with q of degree 5 from a minimax fit of the relative error on |r| <= ln2/2: 1.7e-8 with these
# float32 coefficients, so that the result is within ~0.6 ulp (degree 4 gives 9.4e-8, ~1.3 ulp,
# which made softmax less accurate than PyTorch's; degree 3 2.8e-6).
_MAGIC_32 = np.float32(12583103.0)
_TWO_M64_32 = np.float32(2.0**-64)
_LN2_HI_E32 = np.float32(float.fromhex("0x1.62e43p-1"))
_LN2_LO_E32 = np.float32(float.fromhex("0x1.05c61p-29"))
_Q_32 = tuple(
    np.float32(float.fromhex(c))
    for c in (
        "0x1p0",
        "0x1.fffffcp-2",
        "0x1.55541ap-3",
        "0x1.555824p-5",
        "0x1.1267b4p-7",
        "0x1.6ae702p-10",
    )
)


@njit(fastmath=_EXP_FLAGS, error_model="numpy", cache=True, inline="always")
def _exp_shifted_f32(x, shift, scale):
    d = x - shift
    t = d - x
    err = (x - (d - t)) - (shift + t)  # TwoSum: d + err == x - shift exactly
    u = d * scale
    lo = _fma(err, scale, _fma(d, scale, -u))  # u + lo == (x - shift) * scale to ~1e-14
    t = _fma(u, _LOG2E_32, _MAGIC_32)
    n = t - _MAGIC_32
    r = _fma(-n, _LN2_HI_E32, u)
    r = _fma(n, _LN2_LO_E32, r) + lo
    q = _fma(_Q_32[5], r, _Q_32[4])
    q = _fma(q, r, _Q_32[3])
    q = _fma(q, r, _Q_32[2])
    q = _fma(q, r, _Q_32[1])
    q = _fma(q, r, _Q_32[0])
    s = _magic_pow2(t)
    y = _fma(r * s, q, s) * _TWO_M64_32
    return _select(u < _XMIN_32, np.float32(0.0), y)


@njit(fastmath=_EXP_FLAGS, error_model="numpy", cache=True, inline="always")
def _exp_shifted_f64(x, shift, scale):
    return _exp_f64((x - shift) * scale, 0.0)


def exp_shifted(x, shift, scale):
    """exp((x - shift) * scale), vectorizable, in the dtype of x.

    For ``shift`` >= x (the callers pass the row maximum). float32 feeds the rounding errors of
    the subtraction (TwoSum) and of the product (FMA) into the reduction, so softmax entries far
    below the row maximum keep ~2e-7 relative accuracy, where a plain ``exp(x - m)`` loses up to
    half an ulp of x - m (3.8e-6 at entries of 1e-30). float64 does
    not need the compensation (|x - m| * 1.1e-16 stays below 1e-14 for every entry above 1e-30).
    """
    with np.errstate(all="ignore"):  # Python calls (numba compiles the overload below)
        if isinstance(x, np.float32):
            return np.float32(_exp_shifted_f32(x, np.float32(shift), np.float32(scale)))
        return np.float64(_exp_shifted_f64(np.float64(x), np.float64(shift), np.float64(scale)))


@overload(exp_shifted, jit_options={"cache": True, "error_model": "numpy"}, inline="always")
def _exp_shifted_overload(x, shift, scale):
    if x == types.float32:
        return lambda x, shift, scale: _exp_shifted_f32(x, shift, scale)
    if x == types.float64:
        return lambda x, shift, scale: _exp_shifted_f64(x, shift, scale)
    return None


def vexp(x):
    """exp(x) in the dtype of x (float32 or float64); vectorizes; NaN stays NaN."""
    with np.errstate(all="ignore"):  # Python calls (numba compiles the overload below)
        if isinstance(x, np.float32):
            return np.float32(_exp_f32(x, np.float32(0.0)))
        return np.float64(_exp_f64(np.float64(x), 0.0))


@overload(vexp, jit_options={"cache": True, "error_model": "numpy"})
def _vexp_overload(x):
    if x == types.float32:
        return lambda x: _exp_f32(x, np.float32(0.0))
    if x == types.float64:
        return lambda x: _exp_f64(x, 0.0)
    return None


@intrinsic
def _split_float(typingctx, x):
    """(m, e) with x == m * 2**e, m in [1, 2), e an integral float; for finite x > 0 normal."""
    if x not in (types.float32, types.float64):
        return None
    width, mant, bias = (32, 23, 127) if x == types.float32 else (64, 52, 1023)

    def codegen(context, builder, signature, args):
        fty = args[0].type
        ity = ir.IntType(width)
        bits = builder.bitcast(args[0], ity)
        mant_mask = ir.Constant(ity, (1 << mant) - 1)
        m_bits = builder.or_(builder.and_(bits, mant_mask), ir.Constant(ity, bias << mant))
        # exponent as a float without int->float conversion (AVX2 has none for int64):
        # the biased exponent in the low mantissa bits of 2**mant, minus 2**mant + bias
        e_bits = builder.or_(
            builder.lshr(bits, ir.Constant(ity, mant)), ir.Constant(ity, (bias + mant) << mant)
        )
        e = builder.fsub(builder.bitcast(e_bits, fty), ir.Constant(fty, float(2**mant + bias)))
        m = builder.bitcast(m_bits, fty)
        return context.make_tuple(builder, signature.return_type, (m, e))

    return types.UniTuple(x, 2)(x), codegen


# log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716 for m in [sqrt(1/2), sqrt(2)):
# series terms s**(2k+1) / (2k+1) up to k = 5 (float32) or k = 11 (float64).
_SQRT2_32 = np.float32(1.41421356)
_LN2_32 = np.float32(0.693147180559945)
_TINY_32 = np.float32(1.1754944e-38)
_SQRT2_64 = 1.4142135623730951
_LN2_64 = 0.6931471805599453
_TINY_64 = 2.2250738585072014e-308


@njit(fastmath=_EXP_FLAGS, error_model="numpy", cache=True)
def _log_f32(x):
    """log(x) for float32, ~1 ulp; log(0) = -inf, log(x < 0) = NaN, log(inf) = inf."""
    sub = x < _TINY_32
    xs = x * np.float32(16777216.0) if sub else x  # subnormals: scale by 2**24 first
    m, e = _split_float(xs)
    e = e - np.float32(24.0) if sub else e
    big = m > _SQRT2_32
    m = m * np.float32(0.5) if big else m
    e = e + np.float32(1.0) if big else e
    s = (m - np.float32(1.0)) / (m + np.float32(1.0))
    z = s * s
    p = np.float32(1.0 / 11.0)
    p = p * z + np.float32(1.0 / 9.0)
    p = p * z + np.float32(1.0 / 7.0)
    p = p * z + np.float32(1.0 / 5.0)
    p = p * z + np.float32(1.0 / 3.0)
    p = p * z + np.float32(1.0)
    y = e * _LN2_32 + np.float32(2.0) * s * p
    y = np.float32(-np.inf) if x == np.float32(0.0) else y
    y = np.float32(np.inf) if x == np.float32(np.inf) else y
    y = np.float32(np.nan) if not x >= np.float32(0.0) else y
    return y


@njit(fastmath=_EXP_FLAGS, error_model="numpy", cache=True)
def _log_f64(x):
    """log(x) for float64, ~1 ulp; log(0) = -inf, log(x < 0) = NaN, log(inf) = inf."""
    sub = x < _TINY_64
    xs = x * 4503599627370496.0 if sub else x  # subnormals: scale by 2**52 first
    m, e = _split_float(xs)
    e = e - 52.0 if sub else e
    big = m > _SQRT2_64
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    p = 1.0 / 23.0
    p = p * z + 1.0 / 21.0
    p = p * z + 1.0 / 19.0
    p = p * z + 1.0 / 17.0
    p = p * z + 1.0 / 15.0
    p = p * z + 1.0 / 13.0
    p = p * z + 1.0 / 11.0
    p = p * z + 1.0 / 9.0
    p = p * z + 1.0 / 7.0
    p = p * z + 1.0 / 5.0
    p = p * z + 1.0 / 3.0
    p = p * z + 1.0
    y = e * _LN2_64 + 2.0 * s * p
    y = -np.inf if x == 0.0 else y
    y = np.inf if x == np.inf else y
    y = np.nan if not x >= 0.0 else y
    return y


def vlog(x):
    """log(x) in the dtype of x (float32 or float64); vectorizes; NaN stays NaN."""
    with np.errstate(all="ignore"):  # Python calls (numba compiles the overload below)
        if isinstance(x, np.float32):
            return np.float32(_log_f32(x))
        return np.float64(_log_f64(np.float64(x)))


@overload(vlog, jit_options={"cache": True, "error_model": "numpy"})
def _vlog_overload(x):
    if x == types.float32:
        return lambda x: _log_f32(x)
    if x == types.float64:
        return lambda x: _log_f64(x)
    return None


@intrinsic
def _order_key(typingctx, x):
    """Signed integer with the same order as the float ``x`` (IEEE bits, negatives flipped).

    Integer max reductions vectorize without fast-math flags; float ones do not here. A NaN with
    the sign bit clear sorts above +inf, one with the sign bit set below -inf.
    """
    if x not in (types.float32, types.float64):
        return None
    width = x.bitwidth
    int_type = types.int32 if width == 32 else types.int64

    def codegen(context, builder, signature, args):
        ity = ir.IntType(width)
        bits = builder.bitcast(args[0], ity)
        sign = builder.ashr(bits, ir.Constant(ity, width - 1))
        mask = builder.and_(sign, ir.Constant(ity, (1 << (width - 1)) - 1))
        return builder.xor(bits, mask)

    return int_type(x), codegen


@intrinsic
def _key_to_float(typingctx, key):
    """Inverse of ``_order_key``."""
    if key not in (types.int32, types.int64):
        return None
    width = key.bitwidth
    float_type = types.float32 if width == 32 else types.float64

    def codegen(context, builder, signature, args):
        ity = ir.IntType(width)
        sign = builder.ashr(args[0], ir.Constant(ity, width - 1))
        mask = builder.and_(sign, ir.Constant(ity, (1 << (width - 1)) - 1))
        bits = builder.xor(args[0], mask)
        return builder.bitcast(bits, ir.FloatType() if width == 32 else ir.DoubleType())

    return float_type(key), codegen


def _stack_array(dtype, count):
    """Codegen of a 1-D C array of ``count`` ``dtype`` items on the caller's stack (no meminfo)."""
    array_type = types.Array(dtype, 1, "C")

    def codegen(context, builder, signature, args):
        item = context.get_data_type(dtype)
        data = cgutils.alloca_once(builder, item, size=count)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(item))
        ary = context.make_array(array_type)(context, builder)
        populate_array(
            ary,
            data=data,
            shape=[context.get_constant(types.intp, count)],
            strides=[itemsize],
            itemsize=itemsize,
            meminfo=None,
        )
        return ary._getvalue()

    return array_type, codegen


def _lane_count(dtype) -> int:
    """Partial sums per reduction for a row of ``dtype``: LANE_BYTES of them."""
    return LANE_BYTES // (dtype.bitwidth // 8)


@intrinsic
def _lanes(typingctx, like):
    """Uninitialized partial sums in the dtype of the array ``like``, on the caller's stack.

    Stack memory that LLVM sees is private to the function: no overlap check against the row, and
    the partial sums stay in vector registers. Valid only inside the calling function (no
    meminfo): never return or store it.
    """
    if not isinstance(like, types.Array) or like.dtype not in (types.float32, types.float64):
        return None
    array_type, codegen = _stack_array(like.dtype, _lane_count(like.dtype))
    return array_type(like), codegen


@intrinsic
def _wide_lanes(typingctx, like):
    """Like :func:`_lanes`, as many, but float64."""
    if not isinstance(like, types.Array) or like.dtype not in (types.float32, types.float64):
        return None
    array_type, codegen = _stack_array(types.float64, _lane_count(like.dtype))
    return array_type(like), codegen


if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1 (coverage runs): intrinsics in plain NumPy

    def _int_type(x):
        return np.int32 if np.asarray(x).dtype == np.float32 else np.int64

    def _pow2(k):  # k is integral; out of the normal range the callers discard the result
        return np.ldexp(type(k)(1.0), int(k)) if abs(k) < 2048 else type(k)(np.nan)

    def _select(cond, a, b):
        return a if cond else b

    def _magic_pow2(t):
        bits = int(np.float32(t).view(np.uint32))
        return np.uint32((bits << 23) & 0xFFFFFFFF).view(np.float32)

    def _split_float(x):
        ftype = np.asarray(x).dtype.type
        mant, bias = (23, 127) if ftype == np.float32 else (52, 1023)
        bits = np.asarray(x).view(_int_type(x))[()]
        m = np.asarray((bits & ((1 << mant) - 1)) | (bias << mant)).view(ftype)[()]
        return m, ftype((bits >> mant) - bias)

    def _lanes(like):
        return np.empty(LANE_BYTES // like.itemsize, dtype=like.dtype)

    def _wide_lanes(like):
        return np.empty(LANE_BYTES // like.itemsize, dtype=np.float64)

    def _fma(a, b, c):  # float32: exact product in float64, rounded at the end; float64: twice
        if isinstance(a, np.float32):
            return np.float32(np.float64(a) * np.float64(b) + np.float64(c))
        return a * b + c

    def _order_key(x):
        bits = np.asarray(x).view(_int_type(x))[()]
        width = bits.dtype.itemsize * 8
        return bits ^ ((bits >> (width - 1)) & ((1 << (width - 1)) - 1))

    def _key_to_float(key):
        key = np.asarray(key)[()]
        width = key.dtype.itemsize * 8
        bits = np.asarray(key ^ ((key >> (width - 1)) & ((1 << (width - 1)) - 1)))
        return bits.view(np.float32 if width == 32 else np.float64)[()]


@njit(error_model="numpy", cache=True)
def row_max(x, mask):
    """Largest entry of a 1-D row among entries where ``mask`` is True (all when mask is None),
    vectorized through integer keys; -inf for an empty or fully masked row.

    A NaN with the sign bit clear makes the result NaN; one with the sign bit set is skipped (the
    callers detect NaN through the row sum, which any NaN poisons).
    """
    lowest = _order_key(x.dtype.type(-np.inf))
    m = lowest
    for j in range(x.shape[0]):
        k = _order_key(x[j])
        if mask is not None:
            k = k if mask[j] else lowest
        m = k if k > m else m
    return _key_to_float(m)


# Every reduction below keeps the row's partial sums in ``lanes`` (row dtype, reset per block) and
# ``wide`` (float64, the whole row): entry j of a block goes to lane j % len(lanes), in order; after
# each block the lanes move into ``wide``, which is added up in a fixed tree at the end. The term
# helpers loop over one group of lanes through 0-based views (``x[g:g + count]``); the inner loop
# is elementwise, so LLVM vectorizes it without reassociating anything (a full group has a constant
# trip count and unrolls into a few vector registers), and whichever path it takes (vector, scalar
# remainder, the fallback after a failed overlap check) adds the same terms in the same order.
# They are inlined by numba: as calls, LLVM does not inline them (a call and refcounts per group).


@njit(fastmath=FASTMATH, error_model="numpy", cache=True, inline="always")
def _clear(lanes):
    """Set every partial sum to 0."""
    for k in range(lanes.shape[0]):
        lanes[k] = lanes.dtype.type(0.0)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True, inline="always")
def _spill(lanes, wide):
    """Add a block's partial sums into the row's float64 ones, lane by lane."""
    for k in range(lanes.shape[0]):
        wide[k] += np.float64(lanes[k])


@njit(fastmath=FASTMATH, error_model="numpy", cache=True, inline="always")
def _total(wide):
    """The float64 partial sums added pairwise in a fixed tree (lane k + width into lane k).

    A fixed number of levels (enough for up to 128 lanes; the last ones empty) and constant trip
    counts, so that LLVM unrolls it all into a few vector operations on registers.
    """
    for level in range(1, 8):
        width = wide.shape[0] >> level
        for k in range(width):
            wide[k] += wide[k + width]
    return wide[0]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True, inline="always")
def _add_entries(lanes, x, g, count):
    """lanes[k] += x[g + k] for k < count."""
    xg = x[g : g + count]
    for k in range(count):
        lanes[k] += xg[k]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True, inline="always")
def _add_products(lanes, x, y, g, count):
    """lanes[k] += x[g + k] * y[g + k] for k < count."""
    xg = x[g : g + count]
    yg = y[g : g + count]
    for k in range(count):
        lanes[k] += xg[k] * yg[k]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True, inline="always")
def _exp_term(x, j, shift, scale, mask, exact):
    """(e, part) for entry j: e = exp((x_j - shift) * scale), 0 where ``mask`` leaves it out, and
    the part of e that goes into the partial sums: with ``exact``, e - 1 for an entry at the
    maximum (x_j == shift, where e is exactly exp(0) = 1), else e itself."""
    zero = x.dtype.type(0.0)
    xj = x[j]
    e = exp_shifted(xj, shift, scale)
    part = _select(xj == shift, e - x.dtype.type(1.0), e) if exact else e
    if mask is not None:
        e = _select(mask[j], e, zero)
        part = _select(mask[j], part, zero)
    return e, part


# The three group loops of an exp pass; ``out`` is unused by the first (the pass hands it ``x``).
@njit(fastmath=FASTMATH, error_model="numpy", cache=True, inline="always")
def _add_exps(lanes, x, out, g, count, shift, scale, mask, exact):
    """lanes[k] += exp((x[g + k] - shift) * scale) for k < count (nothing where masked)."""
    xg = x[g : g + count]
    mg = None if mask is None else mask[g : g + count]
    for k in range(count):
        lanes[k] += _exp_term(xg, k, shift, scale, mg, exact)[1]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True, inline="always")
def _store_exps(lanes, x, out, g, count, shift, scale, mask, exact):
    """:func:`_add_exps`, also writing each term to ``out`` (0 where masked)."""
    xg = x[g : g + count]
    og = out[g : g + count]
    mg = None if mask is None else mask[g : g + count]
    for k in range(count):
        e, part = _exp_term(xg, k, shift, scale, mg, exact)
        og[k] = e
        lanes[k] += part


@njit(fastmath=FASTMATH, error_model="numpy", cache=True, inline="always")
def _store_exps_inplace(lanes, x, out, g, count, shift, scale, mask, exact):
    """:func:`_store_exps` with ``out`` = ``x``, read and written through one view."""
    xg = x[g : g + count]
    mg = None if mask is None else mask[g : g + count]
    for k in range(count):
        e, part = _exp_term(xg, k, shift, scale, mg, exact)
        xg[k] = e
        lanes[k] += part


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def row_sum(x):
    """Sum of a 1-D row, in float64 partial sums (vectorized): float32 terms near the float32
    maximum, such as the losses of huge logits, would overflow float32 ones."""
    n = x.shape[0]
    wide = _wide_lanes(x)
    L = wide.shape[0]
    _clear(wide)
    full = n - n % L
    for g in range(0, full, L):
        _add_entries(wide, x, g, L)
    _add_entries(wide, x, full, n - full)
    return _total(wide)


@njit(error_model="numpy", cache=True)
def same_memory(a, b):
    """True if arrays a and b start at the same address (an in-place call).

    LLVM vectorizes a loop that reads ``x`` and writes ``out`` only after a runtime check that
    they do not overlap, and runs a scalar loop when they do: 5-10x slower for the exp loop.
    The exp passes therefore run over one array when this is true.
    """
    return a.ctypes.data == b.ctypes.data


@njit(error_model="numpy", cache=True)
def row_count_max(x, shift, mask):
    """Number of entries equal to ``shift`` (the row maximum) where ``mask`` is True: the terms
    of exactly 1 that the exp sums leave out (an integer sum: its order cannot matter)."""
    count = 0
    for j in range(x.shape[0]):
        hit = x[j] == shift
        if mask is not None:
            hit = hit and mask[j]
        count += hit
    return count


def _exp_pass(group, exact: bool, name: str):
    """A compiled row pass ``(x, shift, scale, out, mask) -> rest`` running ``group`` over the
    row: rest = sum_j exp((x_j - shift) * scale) - 1 in float64 over the entries where ``mask``
    is True (all when mask is None), for ``shift`` the row maximum.

    With ``exact``, the terms of entries at the maximum (each exactly 1) are left out of the
    partial sums and their number less one is added at the end, so that ``log1p(rest)`` keeps
    terms far below 1 (1 + exp(-40) would round to 1 in any accumulator): for the log paths. Without
    it the sum is the plain one less 1, for passes that only normalize (one integer pass and a
    compare per entry fewer). Within a block the sums run in the row's dtype (vectorized), across
    blocks in float64. ``group`` and ``exact`` are compile-time constants of each pass.
    """

    def row_pass(x, shift, scale, out, mask):
        n = x.shape[0]
        ties = row_count_max(x, shift, mask) if exact else 0  # before the pass: it may write x
        lanes, wide = _lanes(x), _wide_lanes(x)
        L = lanes.shape[0]
        _clear(wide)
        for start in range(0, n, BLOCK):
            stop = min(start + BLOCK, n)
            full = stop - (stop - start) % L
            _clear(lanes)
            for g in range(start, full, L):
                group(lanes, x, out, g, L, shift, scale, mask, exact)
            group(lanes, x, out, full, stop - full, shift, scale, mask, exact)
            _spill(lanes, wide)
        return _total(wide) + np.float64(ties - 1)

    row_pass.__name__ = row_pass.__qualname__ = name  # apart in numba's disk cache
    return njit(fastmath=FASTMATH, error_model="numpy", cache=True)(row_pass)


_exp_sum = _exp_pass(_add_exps, True, "_exp_sum")
_exp_store_exact = _exp_pass(_store_exps, True, "_exp_store_exact")
_exp_store_plain = _exp_pass(_store_exps, False, "_exp_store_plain")
_exp_inplace_exact = _exp_pass(_store_exps_inplace, True, "_exp_inplace_exact")
_exp_inplace_plain = _exp_pass(_store_exps_inplace, False, "_exp_inplace_plain")


@njit(error_model="numpy", cache=True)
def row_exp_sum(x, shift, scale, mask):
    """Exact rest = sum_j exp((x_j - shift) * scale) - 1 (see :func:`_exp_pass`), for logs."""
    return _exp_sum(x, shift, scale, x, mask)


@njit(error_model="numpy", cache=True)
def row_exp_into(x, shift, scale, out, mask):
    """:func:`row_exp_sum` (the same value, bit for bit), also writing each term to ``out`` (0
    where masked); ``out`` may be ``x``. LLVM vectorizes a loop that reads one array and writes
    another only after a runtime overlap check, and runs a scalar loop when they overlap (5-10x
    slower for this one), so ``out`` = ``x`` takes a pass over one array."""
    if same_memory(x, out):
        return _exp_inplace_exact(out, shift, scale, out, mask)
    return _exp_store_exact(x, shift, scale, out, mask)


@njit(error_model="numpy", cache=True)
def row_exp_total_into(x, shift, scale, out, mask):
    """:func:`row_exp_into` for callers that only normalize by 1 + rest: the plain sum less 1,
    not exact for ``log1p`` (terms below half an ulp of the total are rounded away)."""
    if same_memory(x, out):
        return _exp_inplace_plain(out, shift, scale, out, mask)
    return _exp_store_plain(x, shift, scale, out, mask)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def row_dot(x, y):
    """sum_j x_j * y_j: within a block in the row's dtype, across blocks in float64."""
    n = x.shape[0]
    lanes, wide = _lanes(x), _wide_lanes(x)
    L = lanes.shape[0]
    _clear(wide)
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        full = stop - (stop - start) % L
        _clear(lanes)
        for g in range(start, full, L):
            _add_products(lanes, x, y, g, L)
        _add_products(lanes, x, y, full, stop - full)
        _spill(lanes, wide)
    return _total(wide)


@njit(error_model="numpy", cache=True)
def row_has_nan(x, mask):
    """True if the 1-D row holds a NaN where ``mask`` is True (for the rare special-row paths)."""
    for j in range(x.shape[0]):
        if x[j] != x[j] and (mask is None or mask[j]):
            return True
    return False


@njit(error_model="numpy", cache=True)
def row_count_posinf(x, mask):
    """Number of +inf entries in the 1-D row where ``mask`` is True."""
    count = 0
    for j in range(x.shape[0]):
        if x[j] == np.inf and (mask is None or mask[j]):
            count += 1
    return count


@njit(error_model="numpy", cache=True)
def row_count(mask, n):
    """Number of True entries of a row mask (n when mask is None)."""
    if mask is None:
        return n
    count = 0
    for j in range(mask.shape[0]):
        if mask[j]:
            count += 1
    return count
