"""Borrowed row views for the row loops.

``x[i]`` of a 2-D array is a view that shares the array's reference count: numba increments
and decrements it (atomic instructions) around every call the view is passed to, at every level
below. At 128 classes that cost more than the row's exps (softmax of 8192 x 128 float32 took
1.7x as long). :func:`row_of` makes the same view without a reference to the owner: a plain
pointer, shape and strides, valid while the kernel's own argument holds the array. Never
return or store one.
"""

from __future__ import annotations

import numba
from numba import types
from numba.core import cgutils, ir_utils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array


@intrinsic
def row_of(typingctx, a, i):
    """Row ``i`` of the 2-D array ``a`` (``0 <= i < a.shape[0]``, not checked), borrowed."""
    if not (isinstance(a, types.Array) and a.ndim == 2 and isinstance(i, types.Integer)):
        return None
    row_type = types.Array(a.dtype, 1, "C" if a.layout == "C" else "A", readonly=not a.mutable)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        shape = cgutils.unpack_tuple(builder, array.shape, 2)
        strides = cgutils.unpack_tuple(builder, array.strides, 2)
        data = cgutils.pointer_add(builder, array.data, builder.mul(index, strides[0]))
        row = context.make_array(row_type)(context, builder)
        populate_array(
            row,
            data=builder.bitcast(data, array.data.type),
            shape=[shape[1]],
            strides=[strides[1]],
            itemsize=array.itemsize,
            meminfo=None,
        )
        return row._getvalue()

    return row_type(a, i), codegen


def _row_aliases_array(lhs, args, alias_map, arg_aliases) -> None:
    """Tell numba's alias analysis that ``row_of(a, i)`` is a view of ``a``: without it, the
    parallel-loop pass took the row for a fresh local array and dropped the last store to it
    before the loop body ended (``g[y] -= c3`` of the cross-entropy gradient) as dead code."""
    ir_utils._add_alias(lhs, args[0].name, alias_map, arg_aliases)


ir_utils.alias_func_extensions[("row_of", __name__)] = _row_aliases_array


if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1: plain NumPy views

    def row_of(a, i):
        return a[i]
