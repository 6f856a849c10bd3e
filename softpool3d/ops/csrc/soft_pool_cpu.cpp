// SoftPool on the CPU: fused forward and backward for 1D/2D/3D and adaptive windows.
//
// The Python side describes the windows (see _geometry.flat_windows): for each of
// three axes (depth, height, width; 1D/2D inputs get leading axes of length 1) the
// input length L, the output length O, the regular rule (kernel, stride, padding;
// kernel 0 for adaptive windows), then O window starts and O window ends, already
// clipped to [0, L). Padding is therefore excluded from every window.
//
// Per window:  m = max x,  w_i = exp(x_i - m) / sum_j exp(x_j - m),  y = sum_i w_i x_i
//              dL/dx_i = sum over windows containing i of g * w_i * (1 + x_i - y)
//
// Contiguous (N, C, D, H, W) input: one plane (n, c) at a time. The plane shares one
// reference max M, so exp(x - M) is computed once per element per pass, vectorised
// along W; the window sums are then separable: along W per row, then across rows.
// A window whose sum S = sum exp(x - M) underflows (its own max is far below M) or
// whose result is not finite is recomputed exactly with its own max, so the result
// equals the per-window formula for any input. Backward uses the gather form
//   dx_i = e_i * sum_w (g_w / S_w) * (1 + (x_i - M) - (y_w - M)),  e_i = exp(x_i - M)
// where the sums over windows containing i are again separable. No atomics.
// Backward reads only grad and x: y is recomputed in acc_t from the same sums, so the op
// saves nothing but its input, and in-place ops on the output cannot corrupt the gradient.
//
// channels_last input: vectorised across C with each window's own max.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace softpool3d {
namespace {

using at::vec::Vectorized;

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Smallest window sum S = sum exp(x - M) that the shared-max path trusts. Above it
// every term that matters is a normal number; below it the window is recomputed.
template <typename acc_t>
constexpr acc_t kMinSum = std::is_same_v<acc_t, double> ? acc_t(1e-200) : acc_t(1e-15);

// ---------------------------------------------------------------- geometry

struct Axis {
  int64_t in = 1, out = 1;
  int64_t kernel = 0, stride = 0, padding = 0;  // kernel 0: irregular (adaptive) windows
  std::vector<int64_t> start, end;   // output o reads input [start[o], end[o])
  std::vector<int64_t> first, last;  // input i is read by outputs [first[i], last[i])

  // Rows along this axis are stored zero-padded for regular windows, so that window o
  // covers padded positions [o * stride, o * stride + kernel) with no clipping.
  bool regular() const { return kernel > 0; }
  int64_t row_offset() const { return regular() ? padding : 0; }
  int64_t row_len() const { return regular() ? std::max(in + padding, (out - 1) * stride + kernel) : in; }
};

struct Geometry {
  Axis ax[3];  // depth, height, width
  int64_t in_numel() const { return ax[0].in * ax[1].in * ax[2].in; }
  int64_t out_numel() const { return ax[0].out * ax[1].out * ax[2].out; }
};

Geometry parse_windows(at::IntArrayRef flat) {
  Geometry g;
  size_t pos = 0;
  for (int a = 0; a < 3; ++a) {
    TORCH_CHECK(pos + 5 <= flat.size(), "softpool3d: malformed window table");
    Axis& ax = g.ax[a];
    ax.in = flat[pos];
    ax.out = flat[pos + 1];
    ax.kernel = flat[pos + 2];
    ax.stride = flat[pos + 3];
    ax.padding = flat[pos + 4];
    pos += 5;
    TORCH_CHECK(ax.in >= 1 && ax.out >= 1 && pos + 2 * static_cast<size_t>(ax.out) <= flat.size(),
                "softpool3d: malformed window table");
    ax.start.assign(flat.begin() + pos, flat.begin() + pos + ax.out);
    pos += ax.out;
    ax.end.assign(flat.begin() + pos, flat.begin() + pos + ax.out);
    pos += ax.out;
    ax.first.assign(ax.in, ax.out);
    ax.last.assign(ax.in, 0);
    for (int64_t o = 0; o < ax.out; ++o) {
      TORCH_CHECK(0 <= ax.start[o] && ax.start[o] < ax.end[o] && ax.end[o] <= ax.in,
                  "softpool3d: empty or out-of-range window");
      TORCH_CHECK(o == 0 || (ax.start[o] >= ax.start[o - 1] && ax.end[o] >= ax.end[o - 1]),
                  "softpool3d: windows must be monotone");
      if (ax.regular()) {
        const int64_t lo = o * ax.stride - ax.padding;
        TORCH_CHECK(ax.stride > 0 && ax.padding >= 0 && ax.start[o] == std::max<int64_t>(lo, 0) &&
                        ax.end[o] == std::min(lo + ax.kernel, ax.in),
                    "softpool3d: window table does not match its kernel, stride and padding");
      }
      for (int64_t i = ax.start[o]; i < ax.end[o]; ++i) {
        ax.first[i] = std::min(ax.first[i], o);
        ax.last[i] = std::max(ax.last[i], o + 1);
      }
    }
    for (int64_t i = 0; i < ax.in; ++i) {
      if (ax.first[i] >= ax.last[i]) ax.first[i] = ax.last[i] = 0;  // read by no window
    }
  }
  TORCH_CHECK(pos == flat.size(), "softpool3d: malformed window table");
  return g;
}

struct Window {
  int64_t d0, d1, h0, h1, w0, w1;
};

inline Window window_at(const Geometry& g, int64_t od, int64_t oh, int64_t ow) {
  return {g.ax[0].start[od], g.ax[0].end[od], g.ax[1].start[oh],
          g.ax[1].end[oh],   g.ax[2].start[ow], g.ax[2].end[ow]};
}

// Strides (in elements) of one plane or one channel: depth, height, width.
struct Strides {
  int64_t d, h, w;
};

// ---------------------------------------------------------------- exact windows

// The reference formula for one window, in double, with each window's own max.
// It handles every non-finite case; the fast paths fall back to it.
template <typename T>
double exact_forward(const T* x, Strides s, const Window& win) {
  double m = -std::numeric_limits<double>::infinity();
  bool nan = false;
  for (int64_t d = win.d0; d < win.d1; ++d)
    for (int64_t h = win.h0; h < win.h1; ++h)
      for (int64_t w = win.w0; w < win.w1; ++w) {
        const double v = static_cast<double>(x[d * s.d + h * s.h + w * s.w]);
        if (std::isnan(v)) nan = true;
        else if (v > m) m = v;
      }
  if (nan) return std::numeric_limits<double>::quiet_NaN();
  if (!std::isfinite(m)) return m;  // +inf wins; all -inf stays -inf
  double sum = 0, weighted = 0;
  for (int64_t d = win.d0; d < win.d1; ++d)
    for (int64_t h = win.h0; h < win.h1; ++h)
      for (int64_t w = win.w0; w < win.w1; ++w) {
        const double v = static_cast<double>(x[d * s.d + h * s.h + w * s.w]);
        const double e = std::exp(v - m);
        if (e == 0) continue;
        sum += e;
        weighted += e * (v - m);
      }
  return m + weighted / sum;
}

// Adds one window's exact gradient contributions into dx (same strides as x).
template <typename T, typename acc_t>
void exact_backward(const T* x, acc_t* dx, Strides s, const Window& win, double g, double y) {
  double m = -std::numeric_limits<double>::infinity();
  bool nan = false;
  int64_t n_inf = 0;
  double sum = 0;
  for (int64_t d = win.d0; d < win.d1; ++d)
    for (int64_t h = win.h0; h < win.h1; ++h)
      for (int64_t w = win.w0; w < win.w1; ++w) {
        const double v = static_cast<double>(x[d * s.d + h * s.h + w * s.w]);
        if (std::isnan(v)) nan = true;
        else if (v > m) m = v;
        if (v == std::numeric_limits<double>::infinity()) ++n_inf;
      }
  if (!nan && std::isfinite(m)) {
    for (int64_t d = win.d0; d < win.d1; ++d)
      for (int64_t h = win.h0; h < win.h1; ++h)
        for (int64_t w = win.w0; w < win.w1; ++w)
          sum += std::exp(static_cast<double>(x[d * s.d + h * s.h + w * s.w]) - m);
  }
  if (!nan && m == -std::numeric_limits<double>::infinity()) return;  // all -inf: no gradient
  for (int64_t d = win.d0; d < win.d1; ++d)
    for (int64_t h = win.h0; h < win.h1; ++h)
      for (int64_t w = win.w0; w < win.w1; ++w) {
        const int64_t i = d * s.d + h * s.h + w * s.w;
        const double v = static_cast<double>(x[i]);
        double contrib;
        if (nan) {
          contrib = std::numeric_limits<double>::quiet_NaN();
        } else if (n_inf > 0) {
          contrib = std::isinf(v) && v > 0 ? g / static_cast<double>(n_inf) : 0.0;
        } else {
          const double e = std::exp(v - m);
          if (e == 0) continue;
          contrib = g * (e / sum) * (1.0 + (v - m) - (y - m));
        }
        dx[i] += static_cast<acc_t>(contrib);
      }
}

// ---------------------------------------------------------------- vector helpers

template <typename acc_t>
inline acc_t max_nan(acc_t a, acc_t b) {
  return (std::isnan(a) || std::isnan(b)) ? std::numeric_limits<acc_t>::quiet_NaN() : (a > b ? a : b);
}

// Max of n values; NaN if any is NaN.
template <typename acc_t>
acc_t vector_max(const acc_t* x, int64_t n) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  Vec vmax(-std::numeric_limits<acc_t>::infinity());
  int64_t i = 0;
  for (; i + V <= n; i += V) vmax = at::vec::maximum(vmax, Vec::loadu(x + i));
  alignas(64) acc_t lanes[V];
  vmax.store(lanes);
  acc_t m = -std::numeric_limits<acc_t>::infinity();
  for (int64_t l = 0; l < V; ++l) m = max_nan(m, lanes[l]);
  for (; i < n; ++i) m = max_nan(m, x[i]);
  return m;
}

// exp of non-positive arguments (x - M with M the max). float uses ATen's polynomial exp_u20 (the one
// softmax uses, a few ulp looser than exp but several times faster; it gives 0 below log(FLT_MIN));
// double keeps the full-precision exp.
template <typename acc_t>
inline Vectorized<acc_t> exp_nonpositive(const Vectorized<acc_t>& v) {
  if constexpr (std::is_same_v<acc_t, float>) return v.exp_u20();
  else return v.exp();
}

// e[i] = exp(x[i] - M) and, if ex is given, ex[i] = e[i] * x[i].
template <typename acc_t>
void exp_shifted(const acc_t* x, int64_t n, acc_t M, acc_t* e, acc_t* ex) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Vec vM(M);
  int64_t i = 0;
  for (; i + V <= n; i += V) {
    const Vec xv = Vec::loadu(x + i);
    const Vec ev = exp_nonpositive(xv - vM);
    ev.store(e + i);
    if (ex) (ev * xv).store(ex + i);
  }
  if (i < n) {
    const int64_t r = n - i;
    const Vec xv = Vec::loadu(x + i, r);
    const Vec ev = exp_nonpositive(xv - vM);
    ev.store(e + i, r);
    if (ex) (ev * xv).store(ex + i, r);
  }
}

// One row of a tile: e = exp(x - M) (stored when e is given), col += e and wcol += e * x.
template <typename acc_t>
void exp_accumulate(const acc_t* x, int64_t n, acc_t M, acc_t* e, acc_t* __restrict col, acc_t* __restrict wcol) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Vec vM(M);
  for (int64_t i = 0; i < n; i += V) {
    const int64_t r = std::min(V, n - i);
    const Vec xv = r == V ? Vec::loadu(x + i) : Vec::loadu(x + i, r);
    const Vec ev = exp_nonpositive(xv - vM);
    const Vec cv = (r == V ? Vec::loadu(col + i) : Vec::loadu(col + i, r)) + ev;
    const Vec wv = (r == V ? Vec::loadu(wcol + i) : Vec::loadu(wcol + i, r)) + ev * xv;
    if (r == V) {
      cv.store(col + i);
      wv.store(wcol + i);
      if (e) ev.store(e + i);
    } else {
      cv.store(col + i, r);
      wv.store(wcol + i, r);
      if (e) ev.store(e + i, r);
    }
  }
}

template <typename scalar_t, typename acc_t = acc_type<scalar_t>>
inline Vectorized<acc_t> load_acc(const scalar_t* p, int64_t count) {
  using Vec = Vectorized<acc_t>;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return count == Vec::size() ? Vec::loadu(p) : Vec::loadu(p, count);
  } else {
    alignas(64) acc_t buf[Vec::size()] = {};
    for (int64_t l = 0; l < count; ++l) buf[l] = static_cast<acc_t>(p[l]);
    return Vec::loadu(buf);
  }
}

template <typename acc_t>
inline void store_acc(acc_t* p, const Vectorized<acc_t>& v, int64_t count) {
  if (count == Vectorized<acc_t>::size()) v.store(p);
  else v.store(p, count);
}

// One input row's gradient: dx = e * ((1 + x - M) * a - b), and 0 where e = exp(x - M) is 0.
// a and b are the row's gathered window coefficients (g/S and g/S * (y - M) summed over its windows).
template <typename acc_t>
void gather_row(const acc_t* x, const acc_t* e, const acc_t* a, const acc_t* b, acc_t M, int64_t n, acc_t* dx) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Vec vM(M), one(1), zero(0);
  for (int64_t i = 0; i < n; i += V) {
    const int64_t count = std::min(V, n - i);
    const Vec xv = load_acc(x + i, count), ev = load_acc(e + i, count);
    const Vec grad = ev * ((one + (xv - vM)) * load_acc(a + i, count) - load_acc(b + i, count));
    store_acc(dx + i, Vec::blendv(grad, zero, ev == zero), count);
  }
}

// ---------------------------------------------------------------- contiguous planes
//
// Windows may overlap along D and H (kernel 3, stride 2). One reference max M per plane; the plane's
// rows of e = exp(x - M) are kept (zero-padded along W). Each output row (od, oh) sums its input rows
// first, vectorised along W, and takes the W-axis window sums of that one row.

template <typename acc_t>
struct PlaneScratch {
  std::vector<acc_t> xbuf;                // the plane in acc_t (reduced-precision inputs only)
  std::vector<acc_t> e;                   // the plane's rows of exp(x - M), each row_len() long
  std::vector<acc_t> col, wcol;           // one output row: sums of e and e * x over its input rows
  std::vector<acc_t> sums, wsums;         // one output row: S and T per window
  std::vector<acc_t> coef_a, coef_b;      // backward: one output row's g/S and g/S * (y - M)
  std::vector<acc_t> spread_a, spread_b;  // backward: those, spread along W, for every output row
  std::vector<acc_t> a_row, b_row;        // backward: one input row's sums of the spread coefficients
  std::vector<int64_t> slow;              // windows to redo exactly
};

template <typename scalar_t, typename acc_t>
const acc_t* plane_as_acc(const scalar_t* xp, int64_t n, std::vector<acc_t>& buf) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return xp;
  } else {
    buf.resize(n);
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<acc_t>(xp[i]);
    return buf.data();
  }
}

template <typename acc_t>
inline void add_into(acc_t* __restrict dst, const acc_t* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

// col += e and wcol += e * x for one row of n values.
template <typename acc_t>
inline void accumulate_row(const acc_t* __restrict x, const acc_t* __restrict e, int64_t n, acc_t* __restrict col,
                           acc_t* __restrict wcol) {
  for (int64_t i = 0; i < n; ++i) {
    col[i] += e[i];
    wcol[i] += e[i] * x[i];
  }
}

// dst[o] = sum of the padded row src over window o (stride S known at compile time when > 0).
template <int S, typename acc_t>
inline void regular_sums(const acc_t* __restrict src, int64_t n_out, int64_t kernel, int64_t stride,
                         acc_t* __restrict dst) {
  const int64_t s = S > 0 ? S : stride;
  for (int64_t o = 0; o < n_out; ++o) dst[o] = src[o * s];
  for (int64_t j = 1; j < kernel; ++j)
    for (int64_t o = 0; o < n_out; ++o) dst[o] += src[o * s + j];
}

// The transpose: the padded row dst (zeroed) receives src[o] at every position of window o.
template <int S, typename acc_t>
inline void regular_spread(const acc_t* __restrict src, int64_t n_out, int64_t kernel, int64_t stride,
                           acc_t* __restrict dst) {
  const int64_t s = S > 0 ? S : stride;
  for (int64_t j = 0; j < kernel; ++j)
    for (int64_t o = 0; o < n_out; ++o) dst[o * s + j] += src[o];
}

// Window sums along one axis of one row: out[o] = sum of row over window o.
// row has a.row_len() entries (zero-padded for regular windows).
template <typename acc_t>
void row_window_sums(const Axis& a, const acc_t* row, acc_t* out) {
  if (a.regular()) {
    if (a.stride == 1) regular_sums<1>(row, a.out, a.kernel, 1, out);
    else if (a.stride == 2) regular_sums<2>(row, a.out, a.kernel, 2, out);
    else regular_sums<0>(row, a.out, a.kernel, a.stride, out);
    return;
  }
  for (int64_t o = 0; o < a.out; ++o) {
    acc_t sum = 0;
    for (int64_t i = a.start[o]; i < a.end[o]; ++i) sum += row[i];
    out[o] = sum;
  }
}

// The transpose of row_window_sums: row[i] = sum of per_window over the windows containing i.
// row has a.row_len() entries; every entry is overwritten.
template <typename acc_t>
void row_window_spread(const Axis& a, const acc_t* per_window, acc_t* row) {
  if (a.regular()) {
    std::fill(row, row + a.row_len(), acc_t(0));
    if (a.stride == 1) regular_spread<1>(per_window, a.out, a.kernel, 1, row);
    else if (a.stride == 2) regular_spread<2>(per_window, a.out, a.kernel, 2, row);
    else regular_spread<0>(per_window, a.out, a.kernel, a.stride, row);
    return;
  }
  for (int64_t i = 0; i < a.in; ++i) {
    acc_t sum = 0;
    for (int64_t o = a.first[i]; o < a.last[i]; ++o) sum += per_window[o];
    row[i] = sum;
  }
}

// Sizes the scratch for one plane; padding entries of e stay zero (only [off, off + W) is written).
template <typename acc_t>
void plane_scratch(const Geometry& g, bool backward, PlaneScratch<acc_t>& s) {
  const Axis &ad = g.ax[0], &ah = g.ax[1], &aw = g.ax[2];
  const int64_t RW = aw.row_len();
  s.e.assign(ad.in * ah.in * RW, acc_t(0));
  s.col.resize(RW);
  s.wcol.resize(RW);
  s.sums.resize(aw.out);
  s.wsums.resize(aw.out);
  if (backward) {
    s.coef_a.resize(aw.out);
    s.coef_b.resize(aw.out);
    s.spread_a.resize(ad.out * ah.out * RW);
    s.spread_b.resize(ad.out * ah.out * RW);
    s.a_row.resize(RW);
    s.b_row.resize(RW);
  }
}

// e = exp(x - M) for every row of the plane xp.
template <typename acc_t>
void plane_exp(const acc_t* xp, const Geometry& g, acc_t M, PlaneScratch<acc_t>& s) {
  const Axis& aw = g.ax[2];
  const int64_t rows = g.ax[0].in * g.ax[1].in, W = aw.in, RW = aw.row_len(), off = aw.row_offset();
  for (int64_t r = 0; r < rows; ++r)
    exp_shifted(xp + r * W, W, M, s.e.data() + r * RW + off, static_cast<acc_t*>(nullptr));
}

// For output row (od, oh): s.sums = S and s.wsums = T of each of its windows (y = T / S), from s.e.
template <typename acc_t>
void output_row_sums(const acc_t* xp, const Geometry& g, int64_t od, int64_t oh, PlaneScratch<acc_t>& s) {
  const Axis& aw = g.ax[2];
  const int64_t H = g.ax[1].in, W = aw.in, RW = aw.row_len(), off = aw.row_offset();
  const Window rows = window_at(g, od, oh, 0);
  std::fill(s.col.begin(), s.col.end(), acc_t(0));
  std::fill(s.wcol.begin(), s.wcol.end(), acc_t(0));
  for (int64_t d = rows.d0; d < rows.d1; ++d)
    for (int64_t h = rows.h0; h < rows.h1; ++h) {
      const int64_t r = d * H + h;
      accumulate_row(xp + r * W, s.e.data() + r * RW + off, W, s.col.data() + off, s.wcol.data() + off);
    }
  row_window_sums(aw, s.col.data(), s.sums.data());
  row_window_sums(aw, s.wcol.data(), s.wsums.data());
}

template <typename scalar_t>
void forward_contiguous(const scalar_t* x, acc_type<scalar_t>* y, int64_t planes, const Geometry& g) {
  using acc_t = acc_type<scalar_t>;
  const Axis &ad = g.ax[0], &ah = g.ax[1], &aw = g.ax[2];
  const int64_t H = ah.in, W = aw.in, oW = aw.out;
  const int64_t in_numel = g.in_numel(), out_numel = g.out_numel();
  const Strides strides{H * W, W, 1};

  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    PlaneScratch<acc_t> s;
    plane_scratch(g, /*backward=*/false, s);
    for (int64_t p = begin; p < end; ++p) {
      const acc_t* xp = plane_as_acc(x + p * in_numel, in_numel, s.xbuf);
      acc_t* yp = y + p * out_numel;
      const acc_t M = vector_max(xp, in_numel);
      const bool shared = std::isfinite(M);
      if (shared) plane_exp(xp, g, M, s);
      for (int64_t od = 0; od < ad.out; ++od)
        for (int64_t oh = 0; oh < ah.out; ++oh) {
          acc_t* yrow = yp + (od * ah.out + oh) * oW;
          if (shared) output_row_sums(xp, g, od, oh, s);
          for (int64_t ow = 0; ow < oW; ++ow) {
            const acc_t S = shared ? s.sums[ow] : acc_t(0);
            const acc_t T = shared ? s.wsums[ow] : acc_t(0);
            if (S >= kMinSum<acc_t> && std::isfinite(T)) {
              yrow[ow] = T / S;
            } else {
              yrow[ow] = static_cast<acc_t>(exact_forward(xp, strides, window_at(g, od, oh, ow)));
            }
          }
        }
    }
  });
}

template <typename scalar_t>
void backward_contiguous(const scalar_t* grad, const scalar_t* x, acc_type<scalar_t>* dx, int64_t planes,
                         const Geometry& g) {
  using acc_t = acc_type<scalar_t>;
  const Axis &ad = g.ax[0], &ah = g.ax[1], &aw = g.ax[2];
  const int64_t D = ad.in, H = ah.in, W = aw.in, oH = ah.out, oW = aw.out;
  const int64_t RW = aw.row_len(), off = aw.row_offset();
  const int64_t in_numel = g.in_numel(), out_numel = g.out_numel();
  const Strides strides{H * W, W, 1};

  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    PlaneScratch<acc_t> s;
    plane_scratch(g, /*backward=*/true, s);
    for (int64_t p = begin; p < end; ++p) {
      const acc_t* xp = plane_as_acc(x + p * in_numel, in_numel, s.xbuf);
      const scalar_t* gp = grad + p * out_numel;
      acc_t* dxp = dx + p * in_numel;
      s.slow.clear();
      const acc_t M = vector_max(xp, in_numel);
      if (!std::isfinite(M)) {
        std::fill(dxp, dxp + in_numel, acc_t(0));
        for (int64_t o = 0; o < out_numel; ++o) s.slow.push_back(o);
      } else {
        plane_exp(xp, g, M, s);
        // 1. Per output row: a = g / S and b = a * (y - M) per window, spread along W.
        for (int64_t od = 0; od < ad.out; ++od)
          for (int64_t oh = 0; oh < oH; ++oh) {
            output_row_sums(xp, g, od, oh, s);
            const int64_t base = (od * oH + oh) * oW;
            for (int64_t ow = 0; ow < oW; ++ow) {
              const acc_t S = s.sums[ow];
              const acc_t yv = s.wsums[ow] / S;
              if (S >= kMinSum<acc_t> && std::isfinite(yv)) {
                s.coef_a[ow] = static_cast<acc_t>(gp[base + ow]) / S;
                s.coef_b[ow] = s.coef_a[ow] * (yv - M);
              } else {
                s.coef_a[ow] = s.coef_b[ow] = 0;
                s.slow.push_back(base + ow);
              }
            }
            row_window_spread(aw, s.coef_a.data(), s.spread_a.data() + (od * oH + oh) * RW);
            row_window_spread(aw, s.coef_b.data(), s.spread_b.data() + (od * oH + oh) * RW);
          }
        // 2. Per input row: A and B summed over the output rows that read it, then
        //    dx = e * ((1 + x - M) * A - B).
        for (int64_t d = 0; d < D; ++d)
          for (int64_t h = 0; h < H; ++h) {
            std::fill(s.a_row.begin(), s.a_row.end(), acc_t(0));
            std::fill(s.b_row.begin(), s.b_row.end(), acc_t(0));
            for (int64_t od = ad.first[d]; od < ad.last[d]; ++od)
              for (int64_t oh = ah.first[h]; oh < ah.last[h]; ++oh) {
                add_into(s.a_row.data(), s.spread_a.data() + (od * oH + oh) * RW, RW);
                add_into(s.b_row.data(), s.spread_b.data() + (od * oH + oh) * RW, RW);
              }
            const int64_t r = d * H + h;
            gather_row(xp + r * W, s.e.data() + r * RW + off, s.a_row.data() + off, s.b_row.data() + off, M, W,
                       dxp + r * W);
          }
      }
      // 3. Windows the shared max cannot serve, exactly.
      for (const int64_t o : s.slow) {
        const int64_t ow = o % oW, oh = (o / oW) % oH, od = o / (oW * oH);
        const Window win = window_at(g, od, oh, ow);
        exact_backward(xp, dxp, strides, win, static_cast<double>(gp[o]), exact_forward(xp, strides, win));
      }
    }
  });
}

// ---------------------------------------------------------------- contiguous, disjoint rows
//
// When no input row (d, h) is read by two output rows (windows do not overlap along D and H,
// as with kernel = stride = 2), each output row (od, oh) owns its input rows: one tile with its
// own reference max, processed in L1 with one exp per element. Along W, the tile's rows are
// summed first, so the W-axis window sums run once per output row.

bool rows_are_disjoint(const Geometry& g) {
  for (int a = 0; a < 2; ++a)
    for (int64_t i = 0; i < g.ax[a].in; ++i)
      if (g.ax[a].last[i] - g.ax[a].first[i] > 1) return false;
  return true;
}

template <typename acc_t>
struct TileScratch {
  std::vector<acc_t> e;              // backward: the tile's rows of exp(x - M), zero-padded along W
  std::vector<acc_t> col, wcol;      // their sums over the tile's rows
  std::vector<acc_t> sums, wsums;    // per output column: S and T
  std::vector<acc_t> a_row, b_row;   // backward: g/S and g/S * (y - M), spread back along W
  std::vector<int64_t> slow;
};

// Max over the tile's rows (NaN if any is NaN), with one horizontal reduction per tile.
template <typename acc_t>
acc_t tile_max(const acc_t* xp, int64_t H, int64_t W, const Window& rows) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Vec lowest(-std::numeric_limits<acc_t>::infinity());
  Vec vmax = lowest;
  for (int64_t d = rows.d0; d < rows.d1; ++d)
    for (int64_t h = rows.h0; h < rows.h1; ++h) {
      const acc_t* row = xp + (d * H + h) * W;
      int64_t i = 0;
      for (; i + V <= W; i += V) vmax = at::vec::maximum(vmax, Vec::loadu(row + i));
      if (i < W) vmax = at::vec::maximum(vmax, Vec::set(lowest, Vec::loadu(row + i, W - i), W - i));
    }
  alignas(64) acc_t lanes[V];
  vmax.store(lanes);
  acc_t m = lanes[0];
  for (int64_t l = 1; l < V; ++l) m = max_nan(m, lanes[l]);
  return m;
}

template <typename scalar_t>
void forward_rows(const scalar_t* x, acc_type<scalar_t>* y, int64_t planes, const Geometry& g) {
  using acc_t = acc_type<scalar_t>;
  const Axis &ad = g.ax[0], &ah = g.ax[1], &aw = g.ax[2];
  const int64_t H = ah.in, W = aw.in, oW = aw.out, RW = aw.row_len(), off = aw.row_offset();
  const int64_t in_numel = g.in_numel(), out_numel = g.out_numel();
  const Strides strides{H * W, W, 1};

  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    TileScratch<acc_t> s;
    std::vector<acc_t> xbuf;
    s.col.resize(RW);
    s.wcol.resize(RW);
    s.sums.resize(oW);
    s.wsums.resize(oW);
    for (int64_t p = begin; p < end; ++p) {
      const acc_t* xp = plane_as_acc(x + p * in_numel, in_numel, xbuf);
      for (int64_t od = 0; od < ad.out; ++od)
        for (int64_t oh = 0; oh < ah.out; ++oh) {
          const Window rows = window_at(g, od, oh, 0);
          acc_t* yrow = y + p * out_numel + (od * ah.out + oh) * oW;
          const acc_t M = tile_max(xp, H, W, rows);
          const bool shared = std::isfinite(M);
          if (shared) {
            std::fill(s.col.begin(), s.col.end(), acc_t(0));
            std::fill(s.wcol.begin(), s.wcol.end(), acc_t(0));
            for (int64_t d = rows.d0; d < rows.d1; ++d)
              for (int64_t h = rows.h0; h < rows.h1; ++h)
                exp_accumulate(xp + (d * H + h) * W, W, M, static_cast<acc_t*>(nullptr), s.col.data() + off,
                               s.wcol.data() + off);
            row_window_sums(aw, s.col.data(), s.sums.data());
            row_window_sums(aw, s.wcol.data(), s.wsums.data());
          }
          for (int64_t ow = 0; ow < oW; ++ow) {
            const acc_t S = shared ? s.sums[ow] : acc_t(0);
            const acc_t T = shared ? s.wsums[ow] : acc_t(0);
            yrow[ow] = (S >= kMinSum<acc_t> && std::isfinite(T))
                           ? T / S
                           : static_cast<acc_t>(exact_forward(xp, strides, window_at(g, od, oh, ow)));
          }
        }
    }
  });
}

template <typename scalar_t>
void backward_rows(const scalar_t* grad, const scalar_t* x, acc_type<scalar_t>* dx, int64_t planes,
                   const Geometry& g) {
  using acc_t = acc_type<scalar_t>;
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Axis &ad = g.ax[0], &ah = g.ax[1], &aw = g.ax[2];
  const int64_t D = ad.in, H = ah.in, W = aw.in, oH = ah.out, oW = aw.out;
  const int64_t RW = aw.row_len(), off = aw.row_offset();
  const int64_t in_numel = g.in_numel(), out_numel = g.out_numel();
  const Strides strides{H * W, W, 1};
  int64_t tile_rows = 0;  // the most input rows one output row reads
  for (int64_t od = 0; od < ad.out; ++od)
    for (int64_t oh = 0; oh < oH; ++oh)
      tile_rows = std::max(tile_rows, (ad.end[od] - ad.start[od]) * (ah.end[oh] - ah.start[oh]));

  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    TileScratch<acc_t> s;
    std::vector<acc_t> xbuf;
    s.e.assign(tile_rows * RW, acc_t(0));
    s.col.resize(RW);
    s.sums.resize(oW);
    s.wcol.resize(RW);
    s.wsums.resize(oW);
    s.a_row.resize(RW);
    s.b_row.resize(RW);
    std::vector<acc_t> coef_a(oW), coef_b(oW);
    for (int64_t p = begin; p < end; ++p) {
      const acc_t* xp = plane_as_acc(x + p * in_numel, in_numel, xbuf);
      const scalar_t* gp = grad + p * out_numel;
      acc_t* dxp = dx + p * in_numel;
      // Rows that no window reads get no gradient.
      for (int64_t d = 0; d < D; ++d)
        for (int64_t h = 0; h < H; ++h)
          if (ad.first[d] == ad.last[d] || ah.first[h] == ah.last[h])
            std::fill(dxp + (d * H + h) * W, dxp + (d * H + h + 1) * W, acc_t(0));
      for (int64_t od = 0; od < ad.out; ++od)
        for (int64_t oh = 0; oh < oH; ++oh) {
          const Window rows = window_at(g, od, oh, 0);
          const int64_t base = (od * oH + oh) * oW;
          const acc_t M = tile_max(xp, H, W, rows);
          s.slow.clear();
          if (!std::isfinite(M)) {
            for (int64_t d = rows.d0; d < rows.d1; ++d)
              for (int64_t h = rows.h0; h < rows.h1; ++h)
                std::fill(dxp + (d * H + h) * W, dxp + (d * H + h + 1) * W, acc_t(0));
            for (int64_t ow = 0; ow < oW; ++ow) s.slow.push_back(ow);
          } else {
            // e = exp(x - M) for the tile's rows, and the window sums S and T (y = T / S).
            std::fill(s.col.begin(), s.col.end(), acc_t(0));
            std::fill(s.wcol.begin(), s.wcol.end(), acc_t(0));
            int64_t t = 0;
            for (int64_t d = rows.d0; d < rows.d1; ++d)
              for (int64_t h = rows.h0; h < rows.h1; ++h, ++t) {
                exp_accumulate(xp + (d * H + h) * W, W, M, s.e.data() + t * RW + off, s.col.data() + off,
                               s.wcol.data() + off);
              }
            row_window_sums(aw, s.col.data(), s.sums.data());
            row_window_sums(aw, s.wcol.data(), s.wsums.data());
            for (int64_t ow = 0; ow < oW; ++ow) {
              const acc_t S = s.sums[ow];
              const acc_t yv = s.wsums[ow] / S;
              if (S >= kMinSum<acc_t> && std::isfinite(yv)) {
                coef_a[ow] = static_cast<acc_t>(gp[base + ow]) / S;
                coef_b[ow] = coef_a[ow] * (yv - M);
              } else {
                coef_a[ow] = coef_b[ow] = 0;
                s.slow.push_back(ow);
              }
            }
            row_window_spread(aw, coef_a.data(), s.a_row.data());
            row_window_spread(aw, coef_b.data(), s.b_row.data());
            // dx = e * ((1 + x - M) * A - B) on every row of the tile.
            t = 0;
            for (int64_t d = rows.d0; d < rows.d1; ++d)
              for (int64_t h = rows.h0; h < rows.h1; ++h, ++t) {
                const int64_t r = (d * H + h) * W;
                gather_row(xp + r, s.e.data() + t * RW + off, s.a_row.data() + off, s.b_row.data() + off, M, W,
                           dxp + r);
              }
          }
          for (const int64_t ow : s.slow) {
            const Window win = window_at(g, od, oh, ow);
            exact_backward(xp, dxp, strides, win, static_cast<double>(gp[base + ow]), exact_forward(xp, strides, win));
          }
        }
    }
  });
}

// ---------------------------------------------------------------- channels_last

// x is (N, D, H, W, C) in memory. Vectorised across C, each window with its own max.

// One window's statistics for `count` channels from xc: m = max x, sum = sum exp(x - m), wsum = sum exp(x - m) * x.
template <typename scalar_t, typename acc_t = acc_type<scalar_t>>
inline void channel_window_stats(const scalar_t* xc, Strides s, const Window& win, int64_t count,
                                 Vectorized<acc_t>& m, Vectorized<acc_t>& sum, Vectorized<acc_t>& wsum) {
  using Vec = Vectorized<acc_t>;
  m = Vec(-std::numeric_limits<acc_t>::infinity());
  for (int64_t d = win.d0; d < win.d1; ++d)
    for (int64_t h = win.h0; h < win.h1; ++h)
      for (int64_t w = win.w0; w < win.w1; ++w)
        m = at::vec::maximum(m, load_acc(xc + d * s.d + h * s.h + w * s.w, count));
  sum = Vec(0);
  wsum = Vec(0);
  for (int64_t d = win.d0; d < win.d1; ++d)
    for (int64_t h = win.h0; h < win.h1; ++h)
      for (int64_t w = win.w0; w < win.w1; ++w) {
        const Vec xv = load_acc(xc + d * s.d + h * s.h + w * s.w, count);
        const Vec ev = exp_nonpositive(xv - m);
        sum = sum + ev;
        wsum = wsum + ev * xv;
      }
}
template <typename scalar_t>
void forward_channels_last(const scalar_t* x, acc_type<scalar_t>* y, int64_t N, int64_t C,
                           const Geometry& g) {
  using acc_t = acc_type<scalar_t>;
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Axis &ad = g.ax[0], &ah = g.ax[1], &aw = g.ax[2];
  const int64_t H = ah.in, W = aw.in;
  const Strides strides{H * W * C, W * C, C};
  const int64_t rows = N * ad.out * ah.out;

  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    alignas(64) acc_t lanes[V];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t oh = row % ah.out, od = (row / ah.out) % ad.out, n = row / (ah.out * ad.out);
      const scalar_t* xn = x + n * g.in_numel() * C;
      for (int64_t ow = 0; ow < aw.out; ++ow) {
        const Window win = window_at(g, od, oh, ow);
        acc_t* yo = y + (((n * ad.out + od) * ah.out + oh) * aw.out + ow) * C;
        for (int64_t c = 0; c < C; c += V) {
          const int64_t count = std::min(V, C - c);
          Vec m, sum, wsum;
          channel_window_stats(xn + c, strides, win, count, m, sum, wsum);
          (wsum / sum).store(lanes);
          for (int64_t l = 0; l < count; ++l) {
            if (!std::isfinite(lanes[l])) lanes[l] = static_cast<acc_t>(exact_forward(xn + c + l, strides, win));
          }
          store_acc(yo + c, Vec::loadu(lanes), count);
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_channels_last(const scalar_t* grad, const scalar_t* x, acc_type<scalar_t>* dx, int64_t N,
                            int64_t C, const Geometry& g) {
  using acc_t = acc_type<scalar_t>;
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Axis &ad = g.ax[0], &ah = g.ax[1], &aw = g.ax[2];
  const int64_t D = ad.in, H = ah.in, W = aw.in;
  const Strides strides{H * W * C, W * C, C};
  const int64_t out_numel = g.out_numel() * C, in_numel = g.in_numel() * C;

  // 1. Per window and channel: its max m, y recomputed in acc_t, and a = g / S; a = 0 marks an exact window.
  std::vector<acc_t> coef_m(N * out_numel), coef_a(N * out_numel), coef_y(N * out_numel);
  std::vector<uint8_t> exact(N * out_numel, 0);
  at::parallel_for(0, N * g.out_numel(), 1, [&](int64_t begin, int64_t end) {
    alignas(64) acc_t m_lanes[V], s_lanes[V], y_lanes[V];
    for (int64_t o = begin; o < end; ++o) {
      const int64_t ow = o % aw.out, oh = (o / aw.out) % ah.out, od = (o / (aw.out * ah.out)) % ad.out;
      const int64_t n = o / g.out_numel();
      const scalar_t* xn = x + n * in_numel;
      const Window win = window_at(g, od, oh, ow);
      for (int64_t c = 0; c < C; c += V) {
        const int64_t count = std::min(V, C - c);
        Vec m, sum, wsum;
        channel_window_stats(xn + c, strides, win, count, m, sum, wsum);
        m.store(m_lanes);
        sum.store(s_lanes);
        (wsum / sum).store(y_lanes);
        for (int64_t l = 0; l < count; ++l) {
          const int64_t i = o * C + c + l;
          const acc_t yv = y_lanes[l];  // as the forward computed it, before rounding to scalar_t
          coef_m[i] = m_lanes[l];
          coef_y[i] = yv;
          if (std::isfinite(m_lanes[l]) && std::isfinite(yv)) {
            coef_a[i] = static_cast<acc_t>(grad[i]) / s_lanes[l];
          } else {
            coef_a[i] = 0;
            exact[i] = 1;
          }
        }
      }
    }
  });

  // 2. Gather over the windows containing each input position.
  const int64_t in_rows = N * D * H;
  at::parallel_for(0, in_rows, 1, [&](int64_t begin, int64_t end) {
    const Vec one(1), zero(0);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t h = row % H, d = (row / H) % D, n = row / (H * D);
      for (int64_t w = 0; w < W; ++w) {
        const int64_t base = n * in_numel + d * strides.d + h * strides.h + w * strides.w;
        for (int64_t c = 0; c < C; c += V) {
          const int64_t count = std::min(V, C - c);
          const Vec xv = load_acc(x + base + c, count);
          Vec acc(0);
          for (int64_t od = ad.first[d]; od < ad.last[d]; ++od)
            for (int64_t oh = ah.first[h]; oh < ah.last[h]; ++oh)
              for (int64_t ow = aw.first[w]; ow < aw.last[w]; ++ow) {
                const int64_t o = n * out_numel + ((od * ah.out + oh) * aw.out + ow) * C + c;
                const Vec m = load_acc(coef_m.data() + o, count);
                const Vec a = load_acc(coef_a.data() + o, count);
                const Vec yv = load_acc(coef_y.data() + o, count);
                const Vec ev = exp_nonpositive(xv - m);
                const Vec contrib = a * ev * (one + xv - yv);
                acc = acc + Vec::blendv(zero, contrib, (a != zero) & (ev != zero));
              }
          store_acc(dx + base + c, acc, count);
        }
      }
    }
  });

  // 3. Exact windows (non-finite max or output), scattered per sample.
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t o = 0; o < g.out_numel(); ++o) {
        const int64_t ow = o % aw.out, oh = (o / aw.out) % ah.out, od = o / (aw.out * ah.out);
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = n * out_numel + o * C + c;
          if (!exact[i]) continue;
          const Window win = window_at(g, od, oh, ow);
          const scalar_t* xc = x + n * in_numel + c;
          exact_backward(xc, dx + n * in_numel + c, strides, win, static_cast<double>(grad[i]),
                         exact_forward(xc, strides, win));
        }
      }
    }
  });
}

// ---------------------------------------------------------------- entry points

bool is_channels_last(const at::Tensor& x) {
  if (x.is_contiguous()) return false;
  if (x.dim() == 4) return x.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (x.dim() == 5) return x.is_contiguous(at::MemoryFormat::ChannelsLast3d);
  return false;
}

at::MemoryFormat format_for(const at::Tensor& x, bool channels_last) {
  if (!channels_last) return at::MemoryFormat::Contiguous;
  return x.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d;
}

at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_input(const at::Tensor& x, const Geometry& g, const char* fn) {
  TORCH_CHECK(x.device().is_cpu(), fn, ": expected a CPU tensor, got ", x.device());
  TORCH_CHECK(x.dim() >= 3 && x.dim() <= 5, fn, ": expected (N, C, *spatial) with 1 to 3 spatial dims");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), fn, ": expected a floating-point tensor");
  const int64_t spatial = x.dim() - 2;
  for (int64_t a = 0; a < 3; ++a) {
    const int64_t size = a < 3 - spatial ? 1 : x.size(2 + a - (3 - spatial));
    TORCH_CHECK(size == g.ax[a].in, fn, ": input size ", x.sizes(), " does not match the window table");
  }
}

std::vector<int64_t> out_shape(const at::Tensor& x, const Geometry& g) {
  std::vector<int64_t> shape{x.size(0), x.size(1)};
  for (int64_t a = 3 - (x.dim() - 2); a < 3; ++a) shape.push_back(g.ax[a].out);
  return shape;
}

at::Tensor forward(const at::Tensor& input, at::IntArrayRef windows) {
  const Geometry g = parse_windows(windows);
  check_input(input, g, "softpool3d forward");
  const bool cl = is_channels_last(input);
  const at::Tensor x = cl ? input : input.contiguous();
  const int64_t N = x.size(0), C = x.size(1);
  at::Tensor y = at::empty(out_shape(x, g), x.options().dtype(acc_dtype(x.scalar_type())), format_for(x, cl));
  if (y.numel() == 0) return y.to(x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "softpool3d_forward", [&] {
    using acc_t = acc_type<scalar_t>;
    if (cl) forward_channels_last<scalar_t>(x.const_data_ptr<scalar_t>(), y.data_ptr<acc_t>(), N, C, g);
    else if (rows_are_disjoint(g)) forward_rows<scalar_t>(x.const_data_ptr<scalar_t>(), y.data_ptr<acc_t>(), N * C, g);
    else forward_contiguous<scalar_t>(x.const_data_ptr<scalar_t>(), y.data_ptr<acc_t>(), N * C, g);
  });
  return y.to(x.scalar_type());
}

at::Tensor backward(const at::Tensor& grad_out, const at::Tensor& input, at::IntArrayRef windows) {
  const Geometry g = parse_windows(windows);
  check_input(input, g, "softpool3d backward");
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(out_shape(input, g)),
              "softpool3d backward: grad must have the output's shape");
  const bool cl = is_channels_last(input);
  const at::MemoryFormat fmt = format_for(input, cl);
  const at::Tensor x = cl ? input : input.contiguous();
  const at::Tensor grad = grad_out.to(x.scalar_type()).contiguous(fmt);
  const int64_t N = x.size(0), C = x.size(1);
  at::Tensor dx = at::empty(x.sizes(), x.options().dtype(acc_dtype(x.scalar_type())), fmt);
  if (dx.numel() == 0) return dx.to(x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "softpool3d_backward", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    if (cl) backward_channels_last<scalar_t>(gp, xp, dx.data_ptr<acc_t>(), N, C, g);
    else if (rows_are_disjoint(g)) backward_rows<scalar_t>(gp, xp, dx.data_ptr<acc_t>(), N * C, g);
    else backward_contiguous<scalar_t>(gp, xp, dx.data_ptr<acc_t>(), N * C, g);
  });
  return dx.to(x.scalar_type());
}

}  // namespace
}  // namespace softpool3d

// The kernels behind the softpool3d ops' CPU registration (_registration.py); private to the package.
TORCH_LIBRARY_FRAGMENT(softpool3d, m) {
  m.def("_cpp_forward(Tensor x, int[] windows) -> Tensor", &softpool3d::forward);
  m.def("_cpp_backward(Tensor grad, Tensor x, int[] windows) -> Tensor", &softpool3d::backward);
}
