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
// Contiguous (N, C, D, H, W) input: one plane (n, c) per thread at a time, one output row
// (od, oh) at a time, vectorised along W. Every exp is taken against the max of values inside
// the windows it serves (each column's max over the output row's input rows, then each
// window's max of those), so no window's sum underflows: the time does not depend on the
// values, and each window's result depends on its own values only. Windows with a NaN or
// infinite max are computed exactly (exact_forward / exact_backward). Details above
// forward_contiguous.
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

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace softpool3d {
namespace {

using at::vec::Vectorized;

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Smallest window sum S that the vectorised path trusts. S is about 1 or more for any window with a
// finite max (its largest entry contributes exp(0)), so only non-finite windows fail the check.
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

// exp of non-positive arguments (x - m with m a max). float uses ATen's polynomial exp_u20 (the one
// softmax uses, a few ulp looser than exp but several times faster; it gives 0 below log(FLT_MIN));
// double keeps the full-precision exp.
template <typename acc_t>
inline Vectorized<acc_t> exp_nonpositive(const Vectorized<acc_t>& v) {
  if constexpr (std::is_same_v<acc_t, float>) return v.exp_u20();
  else return v.exp();
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

// ---------------------------------------------------------------- contiguous input, one output row at a time
//
// Output row (od, oh) reads a tile: the input rows (d, h) with d in [d0, d1) and h in [h0, h1), each along
// all of W. Its windows differ only along W. Per tile, vectorised along W:
//   1. c_j = max of column j over the tile's rows (+inf if it holds a NaN);
//   2. e = exp(x - c_j), col_j = sum of e over the rows and wcol_j = sum of e * x;
//   3. per window o: m_o = max of c_j over its columns (the window's own max), u_oj = exp(c_j - m_o),
//        S_o = sum_j u_oj col_j,  T_o = sum_j u_oj wcol_j,  y_o = T_o / S_o.
// Every reference (c_j, m_o) is the max of values inside the windows it serves, so S_o >= ~1 and nothing
// that matters underflows, whatever the values: the work is the same for every input, and each window's
// result depends on its own values only. Windows with a NaN or infinite max, or a non-finite T (|x| near
// FLT_MAX), are computed by exact_forward / exact_backward.
//
// Backward recomputes the same statistics per tile and scatters into the plane's dx (zeroed first; a
// plane belongs to one thread, so no atomics):
//   dx_i += e_i * ((1 + x_i - c_j) A_j - B_j),  A_j = sum_o a_o u_oj,  B_j = sum_o a_o u_oj (y_o - c_j),
// with a_o = g_o / S_o, over the tile's windows o that contain column j. Backward reads only grad and x:
// y is recomputed in acc_t, so the op saves nothing but its input, and in-place ops on the output cannot
// corrupt the gradient.
//
// Step 3 and the sums A_j, B_j work on windows, not columns. For regular windows they are vector loops
// over windows: the per-column arrays are copied "by phase", padded column q * stride + r to r * L + q,
// so that the k-th column of windows o, o + 1, ... (o * stride + k, ...) is one contiguous run.

// The windows along W. Regular rows are stored zero-padded (Axis::row_offset), so that window o covers
// padded columns [o * stride, o * stride + kernel). Adaptive rows are not padded; their windows are listed
// as (window, column) pairs: window win[p] covers column pos[p].
struct RowWindows {
  bool regular = false;
  int64_t kernel = 0, stride = 1, out = 0;
  int64_t len = 0;    // padded columns (Axis::row_len)
  int64_t phase = 0;  // regular: columns per phase, ceil(len / stride)
  std::vector<int64_t> pos, win;

  // Regular: where window 0's k-th column sits in the by-phase layout (window o's is o further on).
  int64_t at(int64_t k) const { return (k % stride) * phase + k / stride; }
  // (window, column) pairs: kernel * out (regular, k-major) or the adaptive list's length.
  int64_t pairs() const { return regular ? kernel * out : static_cast<int64_t>(pos.size()); }
};

RowWindows row_windows(const Axis& a) {
  RowWindows r;
  r.regular = a.regular();
  r.out = a.out;
  r.len = a.row_len();
  if (r.regular) {
    r.kernel = a.kernel;
    r.stride = a.stride;
    r.phase = (r.len + r.stride - 1) / r.stride;
  } else {
    for (int64_t o = 0; o < a.out; ++o)
      for (int64_t i = a.start[o]; i < a.end[o]; ++i) {
        r.pos.push_back(i);
        r.win.push_back(o);
      }
  }
  return r;
}

// by_phase[(j % stride) * phase + j / stride] = row[j], the slots past the row's end set to fill.
template <typename acc_t>
void to_phases(const acc_t* row, const RowWindows& rw, acc_t fill, acc_t* by_phase) {
  for (int64_t r = 0; r < rw.stride; ++r) {
    acc_t* out = by_phase + r * rw.phase;
    int64_t q = 0;
    for (int64_t j = r; j < rw.len; j += rw.stride, ++q) out[q] = row[j];
    for (; q < rw.phase; ++q) out[q] = fill;
  }
}

// The inverse of to_phases: row[j] = by_phase[(j % stride) * phase + j / stride].
template <typename acc_t>
void from_phases(const acc_t* by_phase, const RowWindows& rw, acc_t* row) {
  for (int64_t r = 0; r < rw.stride; ++r) {
    const acc_t* in = by_phase + r * rw.phase;
    int64_t q = 0;
    for (int64_t j = r; j < rw.len; j += rw.stride, ++q) row[j] = in[q];
  }
}

// The most input rows one output row reads.
int64_t max_tile_rows(const Geometry& g) {
  int64_t rows = 0;
  for (int64_t od = 0; od < g.ax[0].out; ++od)
    for (int64_t oh = 0; oh < g.ax[1].out; ++oh)
      rows = std::max(rows, (g.ax[0].end[od] - g.ax[0].start[od]) * (g.ax[1].end[oh] - g.ax[1].start[oh]));
  return rows;
}

template <typename acc_t>
struct TileScratch {
  std::vector<acc_t> xbuf;            // the plane in acc_t (reduced-precision inputs only)
  std::vector<acc_t> cmax;            // per padded column: c_j (-inf in the padding)
  std::vector<acc_t> col, wcol;       // per padded column: sums of e and e * x over the tile's rows
  std::vector<acc_t> cmax_p, col_p, wcol_p;  // regular windows: the same by phase
  std::vector<acc_t> e;               // backward: the tile's rows of e, each row_len() long
  std::vector<acc_t> m, sums, wsums;  // per window: m_o, S_o, T_o
  std::vector<acc_t> u;               // per (window, column) pair: u_oj
  std::vector<acc_t> coef_a, coef_y;  // backward, per window: a_o = g_o / S_o and y_o (0 for exact windows)
  std::vector<acc_t> a_row, b_row;    // backward: A_j and B_j per padded column
  std::vector<acc_t> a_p, b_p;        // regular windows: the same by phase
  std::vector<int64_t> slow;          // windows to compute exactly

  TileScratch(const Geometry& g, const RowWindows& rw, bool backward) {
    const int64_t RW = rw.len, n = g.ax[2].out, by_phase = rw.regular ? rw.stride * rw.phase : 0;
    cmax.resize(RW);
    col.resize(RW);
    wcol.resize(RW);
    cmax_p.resize(by_phase);
    col_p.resize(by_phase);
    wcol_p.resize(by_phase);
    m.resize(n);
    sums.resize(n);
    wsums.resize(n);
    u.resize(rw.pairs());
    if (backward) {
      e.assign(max_tile_rows(g) * RW, acc_t(0));  // the padding entries stay 0
      coef_a.resize(n);
      coef_y.resize(n);
      a_row.assign(RW, acc_t(0));
      b_row.assign(RW, acc_t(0));
      a_p.resize(by_phase);
      b_p.resize(by_phase);
    }
  }
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

// Step 3 for regular windows, vectorised over windows: s.m, s.u, s.sums and s.wsums from the columns'
// c, col and wcol (by phase). u = 0 where m_o is not finite: those windows are computed exactly.
template <typename acc_t>
void regular_window_stats(const RowWindows& rw, TileScratch<acc_t>& s) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Vec zero(0);
  const int64_t n = rw.out;
  const acc_t *c = s.cmax_p.data(), *col = s.col_p.data(), *wcol = s.wcol_p.data();
  for (int64_t o = 0; o < n; o += V) {
    const int64_t count = std::min(V, n - o);
    Vec m = load_acc(c + rw.at(0) + o, count);  // c holds no NaN
    for (int64_t k = 1; k < rw.kernel; ++k) m = at::vec::maximum(m, load_acc(c + rw.at(k) + o, count));
    const Vec finite = (m - m) == zero;
    Vec sum = zero, wsum = zero;
    for (int64_t k = 0; k < rw.kernel; ++k) {
      const int64_t j = rw.at(k) + o;
      const Vec u = Vec::blendv(zero, exp_nonpositive(load_acc(c + j, count) - m), finite);
      store_acc(s.u.data() + k * n + o, u, count);
      sum = sum + u * load_acc(col + j, count);
      wsum = wsum + u * load_acc(wcol + j, count);
    }
    store_acc(s.m.data() + o, m, count);
    store_acc(s.sums.data() + o, sum, count);
    store_acc(s.wsums.data() + o, wsum, count);
  }
}

// Step 3 for adaptive windows, one (window, column) pair at a time.
template <typename acc_t>
void adaptive_window_stats(const RowWindows& rw, TileScratch<acc_t>& s) {
  constexpr acc_t kInf = std::numeric_limits<acc_t>::infinity();
  const int64_t pairs = rw.pairs();
  std::fill(s.m.begin(), s.m.end(), -kInf);
  for (int64_t p = 0; p < pairs; ++p) s.m[rw.win[p]] = max_nan(s.m[rw.win[p]], s.cmax[rw.pos[p]]);
  for (int64_t p = 0; p < pairs; ++p) {
    const acc_t m = s.m[rw.win[p]];
    s.u[p] = std::isfinite(m) ? std::exp(s.cmax[rw.pos[p]] - m) : acc_t(0);
  }
  std::fill(s.sums.begin(), s.sums.end(), acc_t(0));
  std::fill(s.wsums.begin(), s.wsums.end(), acc_t(0));
  for (int64_t p = 0; p < pairs; ++p) {
    s.sums[rw.win[p]] += s.u[p] * s.col[rw.pos[p]];
    s.wsums[rw.win[p]] += s.u[p] * s.wcol[rw.pos[p]];
  }
}

// Steps 1 to 3 for the tile `rows` of the plane xp: fills s.cmax, s.col, s.wcol, s.m, s.u, s.sums and
// s.wsums, and with store_e the tile's rows of e.
template <typename acc_t>
void tile_stats(const acc_t* xp, const Geometry& g, const RowWindows& rw, const Window& rows, bool store_e,
                TileScratch<acc_t>& s) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  constexpr acc_t kInf = std::numeric_limits<acc_t>::infinity();
  const Axis& aw = g.ax[2];
  const int64_t H = g.ax[1].in, W = aw.in, off = aw.row_offset(), RW = rw.len;
  acc_t* cmax = s.cmax.data() + off;
  acc_t* col = s.col.data() + off;
  acc_t* wcol = s.wcol.data() + off;

  // Steps 1 and 2, one vector of columns at a time, the running sums in registers.
  const Vec zero(0), lowest(-kInf), pos_inf(kInf);
  std::fill(s.cmax.begin(), s.cmax.end(), -kInf);  // padding columns: c = -inf, col = wcol = 0
  std::fill(s.col.begin(), s.col.end(), acc_t(0));
  std::fill(s.wcol.begin(), s.wcol.end(), acc_t(0));
  for (int64_t i = 0; i < W; i += V) {
    const int64_t count = std::min(V, W - i);
    // 1. Column maxima. A NaN column gets c = +inf, so that every window containing it has a non-finite max.
    Vec cv = lowest;
    for (int64_t d = rows.d0; d < rows.d1; ++d)
      for (int64_t h = rows.h0; h < rows.h1; ++h) {
        const Vec xv = load_acc(xp + (d * H + h) * W + i, count);
        cv = at::vec::maximum(cv, xv);
      }
    cv = Vec::blendv(cv, pos_inf, cv != cv);
    store_acc(cmax + i, cv, count);
    // 2. e = exp(x - c_j), summed per column. A column whose max is not finite gets e = 0: every window
    //    containing it has a non-finite max (NaN, +inf) or no finite value (-inf) and is computed exactly.
    //    -inf entries of finite columns get e = 0 and add nothing to wcol (not 0 * -inf).
    const Vec finite = (cv - cv) == zero;
    const Vec ref = Vec::blendv(zero, cv, finite);
    Vec colv = zero, wcolv = zero;
    int64_t t = 0;
    for (int64_t d = rows.d0; d < rows.d1; ++d)
      for (int64_t h = rows.h0; h < rows.h1; ++h, ++t) {
        const Vec xv = load_acc(xp + (d * H + h) * W + i, count);
        const Vec ev = Vec::blendv(zero, exp_nonpositive(xv - ref), finite);
        colv = colv + ev;
        wcolv = at::vec::fmadd(ev, Vec::blendv(xv, zero, ev == zero), wcolv);
        if (store_e) store_acc(s.e.data() + t * RW + off + i, ev, count);
      }
    store_acc(col + i, colv, count);
    store_acc(wcol + i, wcolv, count);
  }

  // 3. Per window: m_o, u_oj = exp(c_j - m_o), S_o and T_o.
  if (rw.regular) {
    to_phases(s.cmax.data(), rw, -kInf, s.cmax_p.data());
    to_phases(s.col.data(), rw, acc_t(0), s.col_p.data());
    to_phases(s.wcol.data(), rw, acc_t(0), s.wcol_p.data());
    regular_window_stats(rw, s);
  } else {
    adaptive_window_stats(rw, s);
  }
}

// Per window, from the last tile_stats: a lane mask of the windows whose sums can be used; the others (a
// non-finite max or T) are computed exactly.
template <typename acc_t>
inline Vectorized<acc_t> windows_ok(const TileScratch<acc_t>& s, int64_t o, int64_t count) {
  using Vec = Vectorized<acc_t>;
  const Vec zero(0), m = load_acc(s.m.data() + o, count), t = load_acc(s.wsums.data() + o, count);
  return ((m - m) == zero) & (load_acc(s.sums.data() + o, count) >= Vec(kMinSum<acc_t>)) & ((t - t) == zero);
}

// Lanes [0, count) of a windows_ok mask that are false, as bits (read with __builtin_ctz: GCC and Clang,
// the compilers torch.utils.cpp_extension builds with on Linux and macOS).
template <typename acc_t>
inline int failed_lanes(const Vectorized<acc_t>& ok, int64_t count) {
  return ok.zero_mask() & ((1 << count) - 1);
}

// Backward, regular windows: A_j += a_o u_oj and B_j += a_o u_oj (y_o - c_j) for the windows o that contain
// column j, vectorised over windows (nothing where a_o u_oj is 0, so that a column with no finite value,
// c_j = -inf, adds no NaN). Fills s.a_row and s.b_row.
template <typename acc_t>
void regular_spread(const RowWindows& rw, TileScratch<acc_t>& s) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Vec zero(0);
  const int64_t n = rw.out;
  std::fill(s.a_p.begin(), s.a_p.end(), acc_t(0));
  std::fill(s.b_p.begin(), s.b_p.end(), acc_t(0));
  for (int64_t k = 0; k < rw.kernel; ++k) {
    acc_t *a_p = s.a_p.data() + rw.at(k), *b_p = s.b_p.data() + rw.at(k);
    const acc_t* c = s.cmax_p.data() + rw.at(k);
    for (int64_t o = 0; o < n; o += V) {
      const int64_t count = std::min(V, n - o);
      const Vec w = load_acc(s.coef_a.data() + o, count) * load_acc(s.u.data() + k * n + o, count);
      const Vec wb = Vec::blendv(w * (load_acc(s.coef_y.data() + o, count) - load_acc(c + o, count)), zero, w == zero);
      store_acc(a_p + o, load_acc(a_p + o, count) + w, count);
      store_acc(b_p + o, load_acc(b_p + o, count) + wb, count);
    }
  }
  from_phases(s.a_p.data(), rw, s.a_row.data());
  from_phases(s.b_p.data(), rw, s.b_row.data());
}

// Backward, adaptive windows: the same one (window, column) pair at a time.
template <typename acc_t>
void adaptive_spread(const RowWindows& rw, TileScratch<acc_t>& s) {
  std::fill(s.a_row.begin(), s.a_row.end(), acc_t(0));
  std::fill(s.b_row.begin(), s.b_row.end(), acc_t(0));
  for (int64_t p = 0; p < rw.pairs(); ++p) {
    const int64_t j = rw.pos[p], o = rw.win[p];
    const acc_t w = s.coef_a[o] * s.u[p];
    s.a_row[j] += w;
    s.b_row[j] += w == 0 ? acc_t(0) : w * (s.coef_y[o] - s.cmax[j]);
  }
}

// The tile's rows of dx: dx += e * ((x - c) * A + A - B), nothing where e is 0. c, A and B per column
// (padded coordinates), e as tile_stats stored it.
template <typename acc_t>
void scatter_tile(const acc_t* xp, const Geometry& g, const Window& rows, const TileScratch<acc_t>& s,
                  acc_t* dxp) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Vec zero(0);
  const int64_t H = g.ax[1].in, W = g.ax[2].in, off = g.ax[2].row_offset(), RW = g.ax[2].row_len();
  for (int64_t i = 0; i < W; i += V) {
    const int64_t count = std::min(V, W - i);
    const Vec c = load_acc(s.cmax.data() + off + i, count), a = load_acc(s.a_row.data() + off + i, count);
    const Vec a_minus_b = a - load_acc(s.b_row.data() + off + i, count);
    int64_t t = 0;
    for (int64_t d = rows.d0; d < rows.d1; ++d)
      for (int64_t h = rows.h0; h < rows.h1; ++h, ++t) {
        const int64_t r = (d * H + h) * W + i;
        const Vec xv = load_acc(xp + r, count), ev = load_acc(s.e.data() + t * RW + off + i, count);
        const Vec grad = Vec::blendv(ev * at::vec::fmadd(xv - c, a, a_minus_b), zero, ev == zero);
        store_acc(dxp + r, load_acc(dxp + r, count) + grad, count);
      }
  }
}

// Flush denormal results to zero in this thread while a kernel runs (restored after). Weights far below
// their window's max (exp(-100), say, on heavy-tailed activations) would otherwise be denormal floats, which
// x86 processes many times slower; as terms of a sum that is at least 1 they are below its rounding anyway.
// Every other result below the smallest normal number (about 1e-38 in float32) becomes 0 too: an output of
// 1e-39 reads 0, an absolute difference far below any tolerance (float64 flushes only below 2.2e-308).
class FlushDenormals {
 public:
#if defined(__SSE__) || defined(__x86_64__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8000); }  // MXCSR flush-to-zero
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#endif
};

template <typename scalar_t>
void forward_contiguous(const scalar_t* x, acc_type<scalar_t>* y, int64_t planes, const Geometry& g) {
  using acc_t = acc_type<scalar_t>;
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Axis &ad = g.ax[0], &ah = g.ax[1], &aw = g.ax[2];
  const int64_t H = ah.in, W = aw.in, oW = aw.out;
  const int64_t in_numel = g.in_numel(), out_numel = g.out_numel();
  const Strides strides{H * W, W, 1};
  const RowWindows rw = row_windows(aw);

  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    const FlushDenormals flush;
    TileScratch<acc_t> s(g, rw, /*backward=*/false);
    for (int64_t p = begin; p < end; ++p) {
      const acc_t* xp = plane_as_acc(x + p * in_numel, in_numel, s.xbuf);
      for (int64_t od = 0; od < ad.out; ++od)
        for (int64_t oh = 0; oh < ah.out; ++oh) {
          tile_stats(xp, g, rw, window_at(g, od, oh, 0), /*store_e=*/false, s);
          acc_t* yrow = y + p * out_numel + (od * ah.out + oh) * oW;
          for (int64_t ow = 0; ow < oW; ow += V) {
            const int64_t count = std::min(V, oW - ow);
            const Vec ok = windows_ok(s, ow, count);
            store_acc(yrow + ow, load_acc(s.wsums.data() + ow, count) / load_acc(s.sums.data() + ow, count), count);
            for (int failed = failed_lanes(ok, count); failed != 0; failed &= failed - 1) {
              const int64_t o = ow + __builtin_ctz(failed);
              yrow[o] = static_cast<acc_t>(exact_forward(xp, strides, window_at(g, od, oh, o)));
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
  using Vec = Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const Axis &ad = g.ax[0], &ah = g.ax[1], &aw = g.ax[2];
  const int64_t H = ah.in, W = aw.in, oH = ah.out, oW = aw.out;
  const int64_t in_numel = g.in_numel(), out_numel = g.out_numel();
  const Strides strides{H * W, W, 1};
  const RowWindows rw = row_windows(aw);

  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    const FlushDenormals flush;
    TileScratch<acc_t> s(g, rw, /*backward=*/true);
    const Vec one(1), zero(0);
    for (int64_t p = begin; p < end; ++p) {
      const acc_t* xp = plane_as_acc(x + p * in_numel, in_numel, s.xbuf);
      const scalar_t* gp = grad + p * out_numel;
      acc_t* dxp = dx + p * in_numel;
      std::fill(dxp, dxp + in_numel, acc_t(0));  // inputs that no window reads keep 0
      for (int64_t od = 0; od < ad.out; ++od)
        for (int64_t oh = 0; oh < oH; ++oh) {
          const Window rows = window_at(g, od, oh, 0);
          const scalar_t* grow = gp + (od * oH + oh) * oW;
          tile_stats(xp, g, rw, rows, /*store_e=*/true, s);
          // a_o = g_o / S_o and y_o per window; 0 for the windows computed exactly.
          s.slow.clear();
          for (int64_t ow = 0; ow < oW; ow += V) {
            const int64_t count = std::min(V, oW - ow);
            const Vec ok = windows_ok(s, ow, count);
            const Vec inv = one / load_acc(s.sums.data() + ow, count);
            store_acc(s.coef_a.data() + ow, Vec::blendv(zero, load_acc(grow + ow, count) * inv, ok), count);
            store_acc(s.coef_y.data() + ow, Vec::blendv(zero, load_acc(s.wsums.data() + ow, count) * inv, ok), count);
            for (int failed = failed_lanes(ok, count); failed != 0; failed &= failed - 1)
              s.slow.push_back(ow + __builtin_ctz(failed));
          }
          if (rw.regular) regular_spread(rw, s);
          else adaptive_spread(rw, s);
          scatter_tile(xp, g, rows, s, dxp);
          for (const int64_t ow : s.slow) {
            const Window win = window_at(g, od, oh, ow);
            exact_backward(xp, dxp, strides, win, static_cast<double>(grow[ow]), exact_forward(xp, strides, win));
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
    const FlushDenormals flush;
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
    const FlushDenormals flush;
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
    const FlushDenormals flush;
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
