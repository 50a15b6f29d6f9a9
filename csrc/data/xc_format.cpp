// Parsers of the Extreme Classification Repository text formats into numpy CSR arrays.
// The Python side decompresses and hands over the whole file content; parsing it here in one
// pass is what makes reading a 500k-row label matrix take milliseconds instead of seconds.
#include "data/xc_format.h"

#include <pybind11/numpy.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace py = pybind11;

namespace xcops::data {
namespace {

// Raised while the GIL is released; turned into a Python ValueError once it is held again.
struct ParseError {
  int64_t line;  // 1-based
  std::string problem;
};

struct Csr {  // `data` stays empty for BoW labels, whose values are implicitly 1
  std::vector<int64_t> indptr{0};
  std::vector<int64_t> indices;
  std::vector<float> data;
};

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// `text` in single quotes for an error message: printable ASCII as is, every other byte as
// \xNN, so a message quoting a NUL or non-UTF-8 byte is still valid UTF-8, and at most
// kQuoted bytes of a long token.
std::string quote(std::string_view text) {
  constexpr size_t kQuoted = 40;
  static const char* hex = "0123456789abcdef";
  std::string out(1, '\'');
  for (size_t i = 0; i < std::min(text.size(), kQuoted); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out.push_back(char(c));
    } else {
      out += "\\x";
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  if (text.size() > kQuoted) out += "...";
  out.push_back('\'');
  return out;
}

// Walks the content line by line; `line` is 1-based so error messages match an editor's.
class Lines {
 public:
  explicit Lines(std::string_view text) : text_(text) {}

  bool next(std::string_view& out) {
    if (pos_ >= text_.size()) return false;  // a final '\n' does not start another line
    size_t end = text_.find('\n', pos_);
    if (end == std::string_view::npos) end = text_.size();
    out = text_.substr(pos_, end - pos_);
    pos_ = end + 1;
    ++line_;
    return true;
  }
  int64_t line() const { return line_; }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  int64_t line_ = 0;
};

// A cursor over one line's characters with the number readers both formats need.
class Cursor {
 public:
  Cursor(std::string_view s, int64_t line) : p_(s.data()), end_(s.data() + s.size()), line_(line) {}

  void skip_spaces() {
    while (p_ < end_ && is_space(*p_)) ++p_;
  }
  bool done() const { return p_ >= end_; }
  char peek() const { return *p_; }
  bool at_space() const { return p_ < end_ && is_space(*p_); }
  bool consume(char c) {
    if (p_ >= end_ || *p_ != c) return false;
    ++p_;
    return true;
  }

  // A non-negative integer; `what` names it in error messages ("column", "label", ...).
  int64_t index(const char* what) {
    if (p_ < end_ && *p_ == '-') fail(std::string("negative ") + what + " " + token());
    uint64_t value = 0;
    const char* start = p_;
    auto [ptr, ec] = std::from_chars(p_, end_, value);
    if (ptr == start) fail(std::string("invalid ") + what + " " + found());
    if (ec == std::errc::result_out_of_range || value > uint64_t(std::numeric_limits<int64_t>::max()))
      fail(std::string(what) + " " + token() + " is too large");
    p_ = ptr;
    return int64_t(value);
  }

  // A value in the one number syntax both readers accept (README, "Number syntax"):
  // [+-]? (digits [. digits*] | . digits) ([eE] [+-]? digits)?, read as the nearest double and
  // then rounded to float32. No inf, nan, hex or digit separators. A value too small for
  // float32 rounds to 0 (and is dropped later as an explicit zero); one too large is an error.
  float value() {
    const char* start = p_;
    const char* q = p_;
    if (q < end_ && (*q == '+' || *q == '-')) ++q;
    int64_t lead = 0;  // decimal exponent of the first significant digit, plus one
    bool significant = false, point = false;
    int64_t digits = 0;
    for (; q < end_; ++q) {
      if (*q == '.' && !point) {
        point = true;
      } else if (*q >= '0' && *q <= '9') {
        ++digits;
        if (*q != '0' && !significant) significant = true;
        if (!point && significant) ++lead;
        if (point && !significant) --lead;
      } else {
        break;
      }
    }
    if (digits == 0) fail("non-numeric value " + found());
    int64_t exponent = 0;
    if (q < end_ && (*q == 'e' || *q == 'E')) {
      const char* e = q + 1;
      bool negative = false;
      if (e < end_ && (*e == '+' || *e == '-')) negative = *e++ == '-';
      if (e >= end_ || *e < '0' || *e > '9') fail("non-numeric value " + found());
      for (; e < end_ && *e >= '0' && *e <= '9'; ++e) {
        exponent = std::min<int64_t>(exponent * 10 + (*e - '0'), int64_t(1) << 40);
      }
      if (negative) exponent = -exponent;
      q = e;
    }
    if (q < end_ && !is_space(*q)) fail("non-numeric value " + found());
    double v = 0.0;
    // from_chars takes no '+'; the span is already known to be a valid number.
    const char* first = (*start == '+') ? start + 1 : start;
    auto [ptr, ec] = std::from_chars(first, q, v);
    if (ec == std::errc::result_out_of_range) {
      if (lead + exponent > 0) fail("value " + token() + " is out of float32 range");
      v = 0.0;  // below the smallest double: rounds to 0 in float32 too
    } else if (ptr != q) {
      fail("non-numeric value " + found());
    }
    const float f = static_cast<float>(v);
    if (std::isinf(f)) fail("value " + token() + " is out of float32 range");
    p_ = q;
    return f;
  }

  // The token that ends at the next space or separator, quoted for an error message.
  std::string token() const {
    const char* q = p_;
    while (q < end_ && !is_space(*q) && *q != ',' && (q == p_ || *q != ':')) ++q;
    if (q == p_ && q < end_) ++q;
    return quote(std::string_view(p_, size_t(q - p_)));
  }
  std::string found() const {
    if (p_ >= end_) return "end of line";
    return is_space(*p_) ? "a space" : token();
  }

  [[noreturn]] void fail(std::string problem) const { throw ParseError{line_, std::move(problem)}; }

 private:
  const char* p_;
  const char* end_;
  int64_t line_;
};

// Reads the header's `count` non-negative integers and nothing else.
std::vector<int64_t> parse_header(Lines& lines, int count, const char* layout) {
  std::string_view text;
  if (!lines.next(text)) throw ParseError{1, std::string("missing header (expected '") + layout + "')"};
  auto invalid = [&] {
    return ParseError{1, "invalid header " + quote(text) + " (expected '" + layout + "')"};
  };
  Cursor cur(text, 1);
  std::vector<int64_t> header;
  for (int i = 0; i < count; ++i) {
    cur.skip_spaces();
    if (cur.done() || !(cur.peek() >= '0' && cur.peek() <= '9')) throw invalid();
    header.push_back(cur.index("header count"));
    if (!cur.done() && !cur.at_space()) throw invalid();
  }
  cur.skip_spaces();
  if (!cur.done()) throw invalid();
  return header;
}

// `col:val col:val ...` up to the end of the line, appended to `out` as one row.
void parse_pairs(Cursor& cur, int64_t num_cols, const char* what, Csr& out) {
  for (cur.skip_spaces(); !cur.done(); cur.skip_spaces()) {
    int64_t col = cur.index(what);
    if (col >= num_cols)
      cur.fail(std::string(what) + " " + std::to_string(col) + " >= number of " + what +
               "s in the header (" + std::to_string(num_cols) + ")");
    if (!cur.consume(':'))
      cur.fail(std::string("expected ':' after ") + what + " " + std::to_string(col) + ", found " + cur.found());
    float v = cur.value();
    if (!cur.done() && !cur.at_space()) cur.fail("unexpected " + cur.token() + " after a value");
    out.indices.push_back(col);
    out.data.push_back(v);
  }
  out.indptr.push_back(int64_t(out.indices.size()));
}

void check_row_count(const Lines& lines, int64_t rows_read, int64_t num_rows) {
  if (rows_read < num_rows)
    throw ParseError{lines.line() + 1, "file ends after " + std::to_string(rows_read) +
                                           " rows but the header says " + std::to_string(num_rows)};
}

void reserve_for(Csr& m, size_t bytes, int64_t rows) {
  // Every row takes at least its '\n', so a header claiming more rows than bytes is bogus and
  // must fail on the row count, not on a huge allocation.
  m.indptr.reserve(std::min(size_t(rows), bytes) + 1);
  m.indices.reserve(bytes / 6);  // a typical "1234:1 " pair is about six bytes
  m.data.reserve(bytes / 6);
}

Csr parse_sparse_text(std::string_view text, int64_t& num_rows, int64_t& num_cols) {
  Lines lines(text);
  auto header = parse_header(lines, 2, "num_rows num_cols");
  num_rows = header[0];
  num_cols = header[1];
  Csr m;
  reserve_for(m, text.size(), num_rows);
  std::string_view line;
  int64_t row = 0;
  while (lines.next(line)) {
    if (row == num_rows)
      throw ParseError{lines.line(), "more rows than the header says (" + std::to_string(num_rows) + ")"};
    Cursor cur(line, lines.line());
    parse_pairs(cur, num_cols, "column", m);
    ++row;
  }
  check_row_count(lines, row, num_rows);
  return m;
}

struct Bow {
  Csr x, y;
  int64_t num_rows = 0, num_features = 0, num_labels = 0;
};

// `l1,l2,... f:v f:v`: the label list is the first token unless the line starts with a space
// (no labels) or the first token is already a feature pair.
Bow parse_bow_text(std::string_view text) {
  Lines lines(text);
  auto header = parse_header(lines, 3, "num_points num_features num_labels");
  Bow b;
  b.num_rows = header[0];
  b.num_features = header[1];
  b.num_labels = header[2];
  reserve_for(b.x, text.size(), b.num_rows);
  b.y.indptr.reserve(b.x.indptr.capacity());
  std::string_view line;
  int64_t row = 0;
  while (lines.next(line)) {
    if (row == b.num_rows)
      throw ParseError{lines.line(), "more rows than the header says (" + std::to_string(b.num_rows) + ")"};
    size_t first_end = 0;
    while (first_end < line.size() && !is_space(line[first_end])) ++first_end;
    std::string_view first = line.substr(0, first_end);
    bool has_labels = !first.empty() && first.find(':') == std::string_view::npos;
    Cursor cur(line, lines.line());
    if (has_labels) {
      for (;;) {
        int64_t label = cur.index("label");
        if (label >= b.num_labels)
          cur.fail("label " + std::to_string(label) + " >= number of labels in the header (" +
                   std::to_string(b.num_labels) + ")");
        b.y.indices.push_back(label);
        if (cur.done() || cur.at_space()) break;
        if (!cur.consume(',')) cur.fail("expected ',' between labels, found " + cur.found());
      }
    }
    b.y.indptr.push_back(int64_t(b.y.indices.size()));
    parse_pairs(cur, b.num_features, "feature", b.x);
    ++row;
  }
  check_row_count(lines, row, b.num_rows);
  return b;
}

// Hands a vector's buffer to numpy without copying; the capsule frees it with the array.
template <typename T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({py::ssize_t(owned->size())}, {py::ssize_t(sizeof(T))}, owned->data(),
                        free_when_done);
}

// bytes are parsed in place; str is parsed as its UTF-8 encoding (numbers are ASCII anyway).
std::string_view view_of(const py::object& content) {
  char* buf = nullptr;
  Py_ssize_t len = 0;
  if (PyBytes_Check(content.ptr())) {
    if (PyBytes_AsStringAndSize(content.ptr(), &buf, &len) != 0) throw py::error_already_set();
  } else if (PyUnicode_Check(content.ptr())) {
    const char* s = PyUnicode_AsUTF8AndSize(content.ptr(), &len);
    if (s == nullptr) throw py::error_already_set();
    buf = const_cast<char*>(s);
  } else {
    throw py::type_error("expected the file content as bytes or str, got " +
                         std::string(py::str(py::type::of(content))));
  }
  return {buf, size_t(len)};
}

[[noreturn]] void raise(const std::string& path, const ParseError& e) {
  throw py::value_error(path + ": line " + std::to_string(e.line) + ": " + e.problem);
}

py::tuple parse_sparse(const py::object& content, const std::string& path) {
  std::string_view text = view_of(content);
  Csr m;
  int64_t num_rows = 0, num_cols = 0;
  try {
    py::gil_scoped_release release;
    m = parse_sparse_text(text, num_rows, num_cols);
  } catch (const ParseError& e) {
    raise(path, e);
  }
  return py::make_tuple(to_numpy(std::move(m.indptr)), to_numpy(std::move(m.indices)),
                        to_numpy(std::move(m.data)), num_rows, num_cols);
}

py::tuple parse_bow(const py::object& content, const std::string& path) {
  std::string_view text = view_of(content);
  Bow b;
  try {
    py::gil_scoped_release release;
    b = parse_bow_text(text);
  } catch (const ParseError& e) {
    raise(path, e);
  }
  return py::make_tuple(to_numpy(std::move(b.x.indptr)), to_numpy(std::move(b.x.indices)),
                        to_numpy(std::move(b.x.data)), to_numpy(std::move(b.y.indptr)),
                        to_numpy(std::move(b.y.indices)), b.num_rows, b.num_features, b.num_labels);
}

}  // namespace

void register_xc_format(py::module_& m) {
  m.def("parse_sparse", &parse_sparse, py::arg("content"), py::arg("path"),
        "Parse an XC sparse matrix file ('num_rows num_cols' header, then 'col:val ...' per row)\n"
        "from its whole content (bytes or str). Returns (indptr int64, indices int64, data\n"
        "float32, num_rows, num_cols). Raises ValueError naming `path` and the line on bad input.");
  m.def("parse_bow", &parse_bow, py::arg("content"), py::arg("path"),
        "Parse an XC bag-of-words file ('N F L' header, then 'l1,l2,... f:v ...' per row).\n"
        "Returns (X indptr, X indices, X data, Y indptr, Y indices, num_rows, num_features,\n"
        "num_labels). Raises ValueError naming `path` and the line on bad input.");
}

}  // namespace xcops::data
