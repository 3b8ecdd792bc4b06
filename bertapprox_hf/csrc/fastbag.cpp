// The bag tokenizer of bertapprox_hf in C++: the exact algorithm of the pure-Python BagEncoder
// (tokenization_bertapprox.py) and of text_normalization.py, without the GIL and without per-word caches.
//
// A text is read as code points straight from the Python string, cut into chunks at whitespace that no
// normalization rule looks across, and each chunk is normalized (control characters dropped, lower-cased with
// Python's final-sigma rule, canonically decomposed with the marks stripped) and split into words. Words are
// consumed as they come, so a text costs no more than the words its bag (or the teacher's window) can use.
// The teacher's special tokens written in a text ("[CLS]") are matched in the raw text first (case-sensitively,
// leftmost, longest first, as special_tokens.py does): the text between them and each of them are normalized as
// texts of their own, and a special token's words count as one teacher token in all.
// Vocabulary words live in one code point trie: a word's node is its id, and the n-gram trie, the skip-grams
// and the WordPiece fallback are keyed by node ids. Built once, read-only afterwards: safe from any thread.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "unicode_tables.h"

namespace {

using namespace bagtok_tables;

// Bumped whenever the algorithm changes; the Python wrapper refuses an extension of another version.
constexpr int kAlgorithmVersion = 2;
constexpr uint32_t kSigma = 0x3A3, kFinalSigma = 0x3C2, kSmallSigma = 0x3C3;
constexpr size_t kChunk = 2048;         // code points per normalization chunk (extended to a safe boundary)
// Below this many code points in a batch (about 6 ms of work), one thread does it all. A batch of 64 passages
// (~22k code points) is not split: a second thread then cost more than it saved when torch's OpenMP workers, still
// spinning after the last batch, or another process held the other core (the Encoder at 2 threads).
constexpr size_t kParallelChars = 65536;

inline const Record& record(uint32_t cp) {
  return kRecords[kStage2[(static_cast<uint32_t>(kStage1[cp >> kBlockShift]) << kBlockShift) | (cp & 0xFF)]];
}

uint16_t kAsciiFlags[128];  // record(cp).flags of ASCII, filled when the module loads

// Open-addressing hash map from 64-bit keys to int32 values (-1: absent).
class FlatMap {
 public:
  FlatMap() { rehash(16); }

  int32_t get(uint64_t key) const {
    for (uint64_t slot = mix(key) & mask_;; slot = (slot + 1) & mask_) {
      if (keys_[slot] == key) return values_[slot];
      if (keys_[slot] == kEmpty) return -1;
    }
  }

  void prefetch(uint64_t key) const {
    uint64_t slot = mix(key) & mask_;
    __builtin_prefetch(&keys_[slot]);
    __builtin_prefetch(&values_[slot]);
  }

  // The value of key, inserting make() first if absent.
  template <typename Make>
  int32_t get_or_insert(uint64_t key, Make make) {
    if ((count_ + 1) * 2 > keys_.size()) rehash(keys_.size() * 2);
    uint64_t slot = mix(key) & mask_;
    for (; keys_[slot] != kEmpty; slot = (slot + 1) & mask_) {
      if (keys_[slot] == key) return values_[slot];
    }
    keys_[slot] = key;
    values_[slot] = make();
    ++count_;
    return values_[slot];
  }

  void set(uint64_t key, int32_t value) {
    if ((count_ + 1) * 2 > keys_.size()) rehash(keys_.size() * 2);
    uint64_t slot = mix(key) & mask_;
    for (; keys_[slot] != kEmpty && keys_[slot] != key; slot = (slot + 1) & mask_) {
    }
    if (keys_[slot] == kEmpty) ++count_;
    keys_[slot] = key;
    values_[slot] = value;
  }

 private:
  static constexpr uint64_t kEmpty = ~0ULL;

  static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
  }

  void rehash(size_t capacity) {
    std::vector<uint64_t> old_keys = std::move(keys_);
    std::vector<int32_t> old_values = std::move(values_);
    keys_.assign(capacity, kEmpty);
    values_.assign(capacity, -1);
    mask_ = capacity - 1;
    count_ = 0;
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_keys[i] != kEmpty) set(old_keys[i], old_values[i]);
    }
  }

  std::vector<uint64_t> keys_;
  std::vector<int32_t> values_;
  uint64_t mask_ = 0;
  size_t count_ = 0;
};

// A set of code point strings, each with a dense id in insertion order. Open addressing over 64-bit hashes,
// every hit confirmed against the stored string: lookups cost a hash and about two memory reads.
class StringTable {
 public:
  StringTable() : slots_(16, Slot{0, -1}), mask_(15), offsets_(1, 0) {}

  static uint64_t hash(const uint32_t* text, size_t length) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t k = 0; k < length; ++k) h = (h ^ text[k]) * 0x100000001b3ULL;
    return finish(h, length);
  }

  // Incremental form of hash(): start with kSeed, step() each code point, finish() with the length.
  static constexpr uint64_t kSeed = 0xcbf29ce484222325ULL;
  static uint64_t step(uint64_t h, uint32_t cp) { return (h ^ cp) * 0x100000001b3ULL; }
  static uint64_t finish(uint64_t h, size_t length) {
    h ^= length;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
  }

  int32_t find(const uint32_t* text, size_t length, uint64_t h) const {
    for (uint64_t slot = h & mask_;; slot = (slot + 1) & mask_) {
      const Slot& s = slots_[slot];
      if (s.id < 0) return -1;
      if (s.hash == h && equals(s.id, text, length)) return s.id;
    }
  }

  int32_t find(const uint32_t* text, size_t length) const { return find(text, length, hash(text, length)); }

  void prefetch(uint64_t h) const { __builtin_prefetch(&slots_[h & mask_]); }

  // After prefetch(h): fetch the stored string of the first slot whose hash is h (the likely match).
  void prefetch_text(uint64_t h) const {
    const Slot& s = slots_[h & mask_];
    if (s.id >= 0 && s.hash == h) __builtin_prefetch(pool_.data() + offsets_[s.id]);
  }

  int32_t insert(const std::u32string& key) {
    const uint32_t* text = reinterpret_cast<const uint32_t*>(key.data());
    uint64_t h = hash(text, key.size());
    int32_t found = find(text, key.size(), h);
    if (found >= 0) return found;
    if ((size() + 1) * 2 > slots_.size()) grow();
    int32_t id = static_cast<int32_t>(size());
    pool_.insert(pool_.end(), text, text + key.size());
    offsets_.push_back(pool_.size());
    place(Slot{h, id});
    longest_ = std::max(longest_, key.size());
    return id;
  }

  size_t size() const { return offsets_.size() - 1; }
  size_t longest() const { return longest_; }
  const uint32_t* text(int32_t id) const { return pool_.data() + offsets_[id]; }
  size_t length(int32_t id) const { return offsets_[id + 1] - offsets_[id]; }

 private:
  struct Slot {
    uint64_t hash;
    int32_t id;
  };

  bool equals(int32_t id, const uint32_t* text, size_t length) const {
    return this->length(id) == length && std::memcmp(this->text(id), text, length * sizeof(uint32_t)) == 0;
  }

  void place(const Slot& slot) {
    uint64_t k = slot.hash & mask_;
    while (slots_[k].id >= 0) k = (k + 1) & mask_;
    slots_[k] = slot;
  }

  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.size() * 2, Slot{0, -1});
    mask_ = slots_.size() - 1;
    for (const Slot& slot : old) {
      if (slot.id >= 0) place(slot);
    }
  }

  std::vector<Slot> slots_;
  uint64_t mask_;
  std::vector<uint32_t> pool_;
  std::vector<size_t> offsets_;
  size_t longest_ = 0;
};

// Where a word comes from (special_tokens.py's marks): plain text, or the first or a further word of a special
// token that the teacher reads as one token.
enum Mark : uint8_t { kPlain = 0, kSpecialStart = 1, kSpecialRest = 2 };

// A word of a text: its first code points (enough for every rule that reads them) and its vocabulary id.
struct Word {
  uint32_t start;   // into Workspace::chars
  uint32_t stored;  // code points kept
  uint64_t length;  // code points of the whole word
  uint64_t hash;    // StringTable hash while being read
  int32_t id;       // the vocabulary word equal to it, -1 if none
  uint8_t mark;     // a Mark
};

// Per-thread scratch space, reused across texts.
struct Workspace {
  std::vector<uint32_t> kept, lowered, decomposed;
  std::vector<uint8_t> classes;
  std::vector<uint32_t> chars;
  std::vector<Word> words, pending;
  std::vector<int32_t> bag;
};

struct Settings {
  bool lowercase = true;
  bool strip_accents = true;
  int64_t skipgram_max_gap = 2;
  int64_t max_chars_per_word = 100;
  int64_t teacher_window = 0;
};

class BagTokenizer {
 public:
  Settings settings;
  int32_t unk_id = 0;
  int64_t max_ngram = 1;

  // Entry kinds follow entry_kind() of tokenization_bertapprox.py.
  void build(const std::vector<std::u32string>& entries, const std::vector<bool>& special, size_t teacher_first,
             size_t teacher_count, const std::vector<std::u32string>& teacher_special) {
    static const std::u32string kSkip = U" <skip> ";
    for (const std::u32string& token : teacher_special) {
      if (!token.empty() && std::find(teacher_special_.begin(), teacher_special_.end(), token) == teacher_special_.end())
        teacher_special_.push_back(token);
    }
    // Longest first, so that at one position the longest token matches (special_token_pattern's alternation).
    std::stable_sort(teacher_special_.begin(), teacher_special_.end(),
                     [](const std::u32string& a, const std::u32string& b) { return a.size() > b.size(); });
    for (const std::u32string& token : teacher_special_) {
      if (std::find(special_first_.begin(), special_first_.end(), token[0]) == special_first_.end())
        special_first_.push_back(token[0]);
    }
    ngram_entries_.push_back(-1);  // n-gram node 0: the root
    std::vector<std::pair<int32_t, int32_t>> skip_pairs;
    std::vector<int32_t> skip_ids;
    for (size_t id = 0; id < entries.size(); ++id) {
      const std::u32string& entry = entries[id];
      if (special[id]) continue;
      size_t skip = entry.find(kSkip);
      if (skip != std::u32string::npos) {
        int32_t first = words_.insert(entry.substr(0, skip));
        int32_t second = words_.insert(entry.substr(skip + kSkip.size()));
        skip_pairs.emplace_back(first, second);
        skip_ids.push_back(static_cast<int32_t>(id));
      } else if (entry.find(U' ') != std::u32string::npos) {
        add_ngram(entry, static_cast<int32_t>(id));
      } else if (entry.size() > 2 && entry[0] == U'#' && entry[1] == U'#') {
        int32_t piece = pieces_.insert(entry.substr(2));
        piece_ids_.resize(pieces_.size(), -1);
        piece_ids_[piece] = static_cast<int32_t>(id);
      } else {
        add_ngram(entry, static_cast<int32_t>(id));
      }
    }
    // The teacher's own whole-word tokens.
    std::vector<std::pair<int32_t, int32_t>> teacher;
    size_t end = std::min(entries.size(), teacher_first + teacher_count);
    for (size_t id = teacher_first; id < end; ++id) {
      const std::u32string& entry = entries[id];
      if (special[id] || entry.find(U' ') != std::u32string::npos) continue;
      if (entry.size() > 2 && entry[0] == U'#' && entry[1] == U'#') continue;
      teacher.emplace_back(words_.insert(entry), static_cast<int32_t>(id));
    }
    info_.assign(words_.size(), WordInfo{});
    for (size_t k = 0; k < skip_pairs.size(); ++k) {
      skipgrams_.set(pair(skip_pairs[k].first, skip_pairs[k].second), skip_ids[k]);
      info_[skip_pairs[k].first].skip_first = true;
    }
    for (const auto& [word, id] : teacher) info_[word].teacher_id = id;
    for (size_t word = 0; word < words_.size(); ++word) {
      WordInfo& info = info_[word];
      info.top_node = ngrams_.get(pair(0, static_cast<int32_t>(word)));
      // The first piece of a fallback split: any entry that is a top-level node of the n-gram trie.
      info.first_piece = info.top_node >= 0 ? ngram_entries_[info.top_node] : -1;
    }
    for (size_t word = 0; word < words_.size(); ++word) {
      info_[word].teacher_tokens = count_teacher_tokens(words_.text(static_cast<int32_t>(word)),
                                                        words_.length(static_cast<int32_t>(word)));
    }
    keep_ = static_cast<uint32_t>(
        std::max<uint64_t>(static_cast<uint64_t>(settings.max_chars_per_word), words_.longest()) + 1);
  }

  // The normalized words of text[0:length), passed one by one to take(word) until it returns false. The text is
  // read a chunk at a time; a special token found in a chunk ends the text before it, and is normalized alone
  // (words_with_special_marks normalizes the pieces between special tokens as texts of their own).
  template <typename Take>
  void for_each_word(int kind, const void* data, size_t length, Workspace& ws, Take take) const {
    size_t start = 0;
    while (start < length) {
      size_t end = std::min(length, start + kChunk);
      while (end < length && !(record(PyUnicode_READ(kind, data, end)).flags & kSafe)) ++end;
      if (!teacher_special_.empty()) {
        // A token may start at the boundary itself (it is skipped below) and may reach past it.
        size_t token_length = 0;
        size_t found = find_special(kind, data, start, std::min(length, end + 1), length, &token_length);
        if (token_length) {
          if (found > start && !split_chunk(kind, data, start, found, kPlain, ws, take)) return;
          if (!split_chunk(kind, data, found, found + token_length, kSpecialStart, ws, take)) return;
          start = found + token_length;
          continue;
        }
      }
      if (!split_chunk(kind, data, start, end, kPlain, ws, take)) return;
      start = end + 1;  // the safe boundary itself is whitespace
    }
  }

  // Words of text the bag may use: those the teacher reads, and no more than the bag can take (BagEncoder._words).
  void collect_words(int kind, const void* data, size_t length, int64_t max_entries, Workspace& ws) const {
    ws.words.clear();
    ws.chars.clear();
    const int64_t gap = settings.skipgram_max_gap;
    const int64_t limit = (max_entries + max_ngram + gap + 1) * max_ngram;
    const int64_t window = settings.teacher_window - 2;
    bool exact = false;
    int64_t used = 0;
    for_each_word(kind, data, length, ws, [&](const Word& word) {
      if (settings.teacher_window) {
        if (!exact) {
          used += static_cast<int64_t>(word.length);
          if (used > window) {
            exact = true;
            used = 0;
            for (const Word& kept : ws.words) used += teacher_token_count(kept, ws);
          }
        }
        if (exact) {
          used += teacher_token_count(word, ws);
          if (used > window) return false;
        }
      }
      ws.words.push_back(word);
      return static_cast<int64_t>(ws.words.size()) < limit;
    });
  }

  // The bag of entry ids of one text (BagEncoder.encode), in ws.bag.
  void encode(int kind, const void* data, size_t length, int64_t max_entries, Workspace& ws) const {
    collect_words(kind, data, length, max_entries, ws);
    std::vector<int32_t>& bag = ws.bag;
    bag.clear();
    const std::vector<Word>& words = ws.words;
    const size_t n = words.size();
    for (size_t k = 0; k + 1 < n; ++k) {
      if (words[k].id < 0) continue;
      const WordInfo& info = info_[words[k].id];
      if (info.top_node >= 0 && words[k + 1].id >= 0) ngrams_.prefetch(pair(info.top_node, words[k + 1].id));
      if (info.skip_first && k + 2 < n && words[k + 2].id >= 0) skipgrams_.prefetch(pair(words[k].id, words[k + 2].id));
    }
    size_t i = 0;
    while (i < n) {
      int32_t match_id = -1;
      size_t match_len = 0;
      if (words[i].id >= 0) {
        int32_t level = info_[words[i].id].top_node;
        for (size_t j = i + 1; level >= 0; ++j) {
          if (ngram_entries_[level] >= 0) {
            match_id = ngram_entries_[level];
            match_len = j - i;
          }
          if (j >= n || words[j].id < 0) break;
          level = ngrams_.get(pair(level, words[j].id));
        }
      }
      if (match_len) {
        bag.push_back(match_id);
      } else {
        word_pieces(words[i], ws, bag);
        match_len = 1;
      }
      for (size_t position = i; position < i + match_len; ++position) {
        int32_t first = words[position].id;
        if (first < 0 || !info_[first].skip_first) continue;
        for (int64_t g = 1; g <= settings.skipgram_max_gap; ++g) {
          size_t k = position + static_cast<size_t>(g) + 1;
          if (k >= n) break;
          if (words[k].id < 0) continue;
          int32_t skip_id = skipgrams_.get(pair(first, words[k].id));
          if (skip_id >= 0) bag.push_back(skip_id);
        }
      }
      i += match_len;
      if (static_cast<int64_t>(bag.size()) >= max_entries) break;
    }
    if (static_cast<int64_t>(bag.size()) > max_entries) bag.resize(static_cast<size_t>(max_entries));
  }

  // The normalized text (normalize_text) of text[0:length), for tests.
  std::vector<uint32_t> normalize(int kind, const void* data, size_t length, Workspace& ws) const {
    std::vector<uint32_t> out;
    size_t start = 0;
    while (start < length) {
      size_t end = std::min(length, start + kChunk);
      while (end < length && !(record(PyUnicode_READ(kind, data, end)).flags & kSafe)) ++end;
      const std::vector<uint32_t>& chunk = normalize_chunk(kind, data, start, end, ws);
      out.insert(out.end(), chunk.begin(), chunk.end());
      if (end < length) out.push_back(PyUnicode_READ(kind, data, end));
      start = end + 1;
    }
    return out;
  }

 private:
  struct WordInfo {
    int32_t top_node = -1;     // n-gram trie node of the word alone
    int32_t first_piece = -1;  // entry id as the first piece of a fallback split
    int32_t teacher_id = -1;   // entry id of the teacher's own whole word
    int32_t teacher_tokens = 1;
    bool skip_first = false;   // starts a skip-gram
  };

  // The first position in [from, limit) where one of the teacher's special tokens starts (the longest one there
  // in *token_length), else limit with *token_length 0. A token may end anywhere up to length.
  size_t find_special(int kind, const void* data, size_t from, size_t limit, size_t length,
                      size_t* token_length) const {
    *token_length = 0;
    const uint32_t first = special_first_.size() == 1 ? special_first_[0] : 0;
    for (size_t k = from; k < limit; ++k) {
      if (special_first_.size() == 1 && kind == PyUnicode_1BYTE_KIND) {  // the usual case: memchr for '['
        if (first > 0xFF) return limit;
        const void* hit = std::memchr(static_cast<const Py_UCS1*>(data) + k, static_cast<int>(first), limit - k);
        if (!hit) return limit;
        k = static_cast<size_t>(static_cast<const Py_UCS1*>(hit) - static_cast<const Py_UCS1*>(data));
      }
      uint32_t cp = PyUnicode_READ(kind, data, k);
      if (std::find(special_first_.begin(), special_first_.end(), cp) == special_first_.end()) continue;
      for (const std::u32string& token : teacher_special_) {
        if (token.size() > length - k) continue;
        size_t m = 0;
        while (m < token.size() && PyUnicode_READ(kind, data, k + m) == static_cast<uint32_t>(token[m])) ++m;
        if (m == token.size()) {
          *token_length = m;
          return k;
        }
      }
    }
    return limit;
  }

  static uint64_t pair(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  void add_ngram(const std::u32string& entry, int32_t id) {
    int32_t level = 0;
    size_t start = 0, parts = 0;
    while (true) {
      size_t space = entry.find(U' ', start);
      std::u32string word = entry.substr(start, space == std::u32string::npos ? std::u32string::npos : space - start);
      int32_t node = words_.insert(word);
      level = ngrams_.get_or_insert(pair(level, node), [this] {
        ngram_entries_.push_back(-1);
        return static_cast<int32_t>(ngram_entries_.size() - 1);
      });
      ++parts;
      if (space == std::u32string::npos) break;
      start = space + 1;
    }
    ngram_entries_[level] = id;
    max_ngram = std::max<int64_t>(max_ngram, static_cast<int64_t>(parts));
  }

  // Python's final-sigma rule of str.lower on kept[i] (a capital sigma).
  static uint32_t lower_sigma(const std::vector<uint32_t>& kept, size_t i) {
    size_t j = i;
    uint16_t flags = 0;
    bool found = false;
    while (j > 0) {
      flags = record(kept[--j]).flags;
      if (!(flags & kIgnorable)) {
        found = true;
        break;
      }
    }
    bool final_sigma = found && (flags & kCased);
    if (final_sigma) {
      for (size_t k = i + 1; k < kept.size(); ++k) {
        uint16_t next = record(kept[k]).flags;
        if (!(next & kIgnorable)) {
          final_sigma = !(next & kCased);
          break;
        }
      }
    }
    return final_sigma ? kFinalSigma : kSmallSigma;
  }

  // normalize_text of text[start:end): drop, lower-case, decompose and strip marks. A view into ws.
  const std::vector<uint32_t>& normalize_chunk(int kind, const void* data, size_t start, size_t end,
                                               Workspace& ws) const {
    std::vector<uint32_t>& kept = ws.kept;
    kept.clear();
    bool ascii = true;
    for (size_t k = start; k < end; ++k) {
      uint32_t cp = PyUnicode_READ(kind, data, k);
      if (cp < 0x80) {
        if (cp < 0x20 || cp == 0x7F) {
          if (record(cp).flags & kDrop) continue;
        }
        kept.push_back(cp);
        continue;
      }
      if (record(cp).flags & kDrop) continue;
      kept.push_back(cp);
      ascii = false;
    }
    std::vector<uint32_t>* text = &kept;
    if (settings.lowercase) {
      std::vector<uint32_t>& lowered = ws.lowered;
      lowered.clear();
      for (size_t k = 0; k < kept.size(); ++k) {
        uint32_t cp = kept[k];
        if (cp < 0x80) {
          lowered.push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
        } else if (cp == kSigma) {
          lowered.push_back(lower_sigma(kept, k));
        } else {
          const Record& r = record(cp);
          if (r.lower_len) {
            lowered.insert(lowered.end(), kPool + r.lower_start, kPool + r.lower_start + r.lower_len);
          } else {
            lowered.push_back(static_cast<uint32_t>(static_cast<int64_t>(cp) + r.lower_delta));
          }
        }
      }
      text = &lowered;
    }
    if (!settings.strip_accents || ascii) return *text;
    std::vector<uint32_t>& out = ws.decomposed;
    out.clear();
    std::vector<uint8_t>& ccc = ws.classes;
    ccc.clear();
    for (uint32_t cp : *text) {
      if (cp >= kHangulFirst && cp < kHangulEnd) {
        uint32_t index = cp - kHangulFirst;
        out.push_back(0x1100 + index / 588);
        out.push_back(0x1161 + (index % 588) / 28);
        if (index % 28) out.push_back(0x11A7 + index % 28);
        continue;
      }
      const Record& r = record(cp);
      if (r.nfd_len) {
        out.insert(out.end(), kPool + r.nfd_start, kPool + r.nfd_start + r.nfd_len);
      } else {
        out.push_back(cp);
      }
    }
    // Canonical ordering: a stable sort of each run of non-starters by combining class.
    for (uint32_t cp : out) ccc.push_back(cp < 0x300 ? 0 : record(cp).ccc);
    for (size_t k = 1; k < out.size(); ++k) {
      if (!ccc[k]) continue;
      for (size_t m = k; m > 0 && ccc[m - 1] > ccc[m]; --m) {
        std::swap(ccc[m - 1], ccc[m]);
        std::swap(out[m - 1], out[m]);
      }
    }
    size_t kept_marks = 0;
    for (uint32_t cp : out) {
      if (cp < 0x300 || !(record(cp).flags & kMark)) out[kept_marks++] = cp;
    }
    out.resize(kept_marks);
    return out;
  }

  // Normalize text[start:end) and pass its words to take(); false once take() has had enough. The chunk's words
  // are split first and looked up together, so that their memory reads overlap.
  // mark: kPlain, or kSpecialStart for the text of a special token (its first word; the others kSpecialRest).
  template <typename Take>
  bool split_chunk(int kind, const void* data, size_t start, size_t end, Mark mark, Workspace& ws, Take take) const {
    const std::vector<uint32_t>& text = normalize_chunk(kind, data, start, end, ws);
    std::vector<Word>& pending = ws.pending;
    pending.clear();
    Word word{0, 0, 0, StringTable::kSeed, -1, mark};
    auto append = [&](uint32_t cp) {
      if (word.length == 0) word.start = static_cast<uint32_t>(ws.chars.size());
      if (word.stored < keep_) {
        ws.chars.push_back(cp);
        ++word.stored;
        word.hash = StringTable::step(word.hash, cp);
      }
      ++word.length;
    };
    auto finish = [&]() {
      if (!word.length) return;
      word.hash = StringTable::finish(word.hash, word.stored);
      pending.push_back(word);
      word = Word{0, 0, 0, StringTable::kSeed, -1, mark == kPlain ? kPlain : kSpecialRest};
    };
    for (uint32_t cp : text) {
      uint16_t flags = cp < 0x80 ? kAsciiFlags[cp] : record(cp).flags;
      if (flags & kSpace) {
        finish();
      } else if (flags & kSingle) {
        finish();
        append(cp);
        finish();
      } else {
        append(cp);
      }
    }
    finish();
    for (const Word& w : pending) words_.prefetch(w.hash);
    for (const Word& w : pending) words_.prefetch_text(w.hash);
    for (Word& w : pending) {
      if (w.length == w.stored) w.id = words_.find(ws.chars.data() + w.start, w.stored, w.hash);
      if (w.id >= 0) __builtin_prefetch(&info_[w.id]);
    }
    for (const Word& w : pending) {
      if (!take(w)) return false;
    }
    return true;
  }

  // WordPiece of text[0:length) (greedy longest prefix first), a first piece being a vocabulary word whose
  // first_id(info) is >= 0. Appends the pieces to out (when given) and returns their number; 0 when the word
  // cannot be split (then out gets the unknown id).
  template <typename FirstId>
  size_t greedy_pieces(const uint32_t* text, size_t length, FirstId first_id, std::vector<int32_t>* out) const {
    if (length > static_cast<size_t>(settings.max_chars_per_word)) {
      if (out) out->push_back(unk_id);
      return 0;
    }
    size_t before = out ? out->size() : 0, count = 0;
    size_t start = 0;
    while (start < length) {
      int32_t found = -1;
      size_t stop = length;
      for (; stop > start; --stop) {
        if (start == 0) {
          int32_t word = words_.find(text, stop);
          found = word >= 0 ? first_id(info_[word]) : -1;
        } else {
          int32_t piece = pieces_.find(text + start, stop - start);
          found = piece >= 0 ? piece_ids_[piece] : -1;
        }
        if (found >= 0) break;
      }
      if (found < 0) {
        if (out) {
          out->resize(before);
          out->push_back(unk_id);
        }
        return 0;
      }
      if (out) out->push_back(found);
      ++count;
      start = stop;
    }
    return count;
  }

  void word_pieces(const Word& word, const Workspace& ws, std::vector<int32_t>& bag) const {
    if (word.length > word.stored) {
      bag.push_back(unk_id);  // longer than max_chars_per_word
      return;
    }
    greedy_pieces(ws.chars.data() + word.start, word.stored, [](const WordInfo& info) { return info.first_piece; },
                  &bag);
  }

  int32_t count_teacher_tokens(const uint32_t* text, size_t length) const {
    size_t count = greedy_pieces(text, length, [](const WordInfo& info) { return info.teacher_id; }, nullptr);
    return count ? static_cast<int32_t>(count) : 1;
  }

  // Tokens the teacher's WordPiece makes of one word (at least 1: the unknown token); a special token's are all
  // on its first word.
  int64_t teacher_token_count(const Word& word, const Workspace& ws) const {
    if (word.mark != kPlain) return word.mark == kSpecialStart ? 1 : 0;
    if (word.id >= 0) return info_[word.id].teacher_tokens;
    if (word.length > word.stored) return 1;
    return count_teacher_tokens(ws.chars.data() + word.start, word.stored);
  }

  StringTable words_;   // every vocabulary word (n-gram parts, skip-gram parts, the teacher's words)
  StringTable pieces_;  // "##" pieces without their prefix
  std::vector<int32_t> piece_ids_;      // piece -> entry id
  std::vector<WordInfo> info_;          // word -> what the rules need of it
  FlatMap ngrams_;                      // (n-gram node, word) -> n-gram node
  std::vector<int32_t> ngram_entries_;  // entry id of an n-gram node, -1 if none ends there
  FlatMap skipgrams_;                   // (first word, second word) -> entry id
  uint32_t keep_ = 101;                 // code points kept of a word: more than any rule reads
  std::vector<std::u32string> teacher_special_;  // the teacher's special tokens, longest first
  std::vector<uint32_t> special_first_;          // their distinct first code points
};

// --- Python binding -----------------------------------------------------------------------------------------

struct EncoderObject {
  PyObject_HEAD BagTokenizer* tokenizer;
};

bool read_string(PyObject* text, std::u32string* out) {
  if (!PyUnicode_Check(text)) {
    PyErr_Format(PyExc_TypeError, "expected str, got %s", Py_TYPE(text)->tp_name);
    return false;
  }
  int kind = PyUnicode_KIND(text);
  const void* data = PyUnicode_DATA(text);
  Py_ssize_t length = PyUnicode_GET_LENGTH(text);
  out->resize(static_cast<size_t>(length));
  for (Py_ssize_t k = 0; k < length; ++k) (*out)[k] = PyUnicode_READ(kind, data, k);
  return true;
}

PyObject* bag_to_list(const std::vector<int32_t>& bag) {
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(bag.size()));
  if (!list) return nullptr;
  for (size_t k = 0; k < bag.size(); ++k) {
    PyObject* value = PyLong_FromLong(bag[k]);
    if (!value) {
      Py_DECREF(list);
      return nullptr;
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(k), value);
  }
  return list;
}

int Encoder_init(EncoderObject* self, PyObject* args, PyObject* kwargs) {
  static const char* names[] = {"entries",        "special",           "unk_id",         "lowercase",
                                "strip_accents",  "skipgram_max_gap",  "max_chars_per_word", "teacher_window",
                                "teacher_first",  "teacher_count",     "teacher_special",    nullptr};
  PyObject *entries = nullptr, *special = nullptr, *teacher_special = nullptr;
  int unk_id = 0, lowercase = 1, strip_accents = 1;
  long long gap = 2, max_chars = 100, window = 0, teacher_first = 0, teacher_count = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOi|ppLLLLLO", const_cast<char**>(names), &entries, &special,
                                   &unk_id, &lowercase, &strip_accents, &gap, &max_chars, &window, &teacher_first,
                                   &teacher_count, &teacher_special))
    return -1;
  if (self->tokenizer) {  // other threads may be reading the tables: they are never replaced
    PyErr_SetString(PyExc_RuntimeError, "the encoder is already initialised");
    return -1;
  }
  if (!PyList_Check(entries)) {
    PyErr_SetString(PyExc_TypeError, "entries must be a list of str");
    return -1;
  }
  if (gap < 0 || max_chars < 0 || window < 0 || teacher_first < 0 || teacher_count < 0) {
    PyErr_SetString(PyExc_ValueError, "counts and limits must not be negative");
    return -1;
  }
  Py_ssize_t n = PyList_GET_SIZE(entries);
  if (unk_id < 0 || unk_id >= n) {
    PyErr_SetString(PyExc_ValueError, "unk_id is not an entry id");
    return -1;
  }
  std::vector<std::u32string> strings(static_cast<size_t>(n));
  std::vector<bool> is_special(static_cast<size_t>(n), false);
  for (Py_ssize_t k = 0; k < n; ++k) {
    PyObject* entry = PyList_GET_ITEM(entries, k);
    if (!read_string(entry, &strings[k])) return -1;
    int contained = PySequence_Contains(special, entry);
    if (contained < 0) return -1;
    is_special[k] = contained == 1;
  }
  std::vector<std::u32string> special_texts;  // the teacher's special tokens, as written in a text
  if (teacher_special && teacher_special != Py_None) {
    if (PyUnicode_Check(teacher_special)) {
      PyErr_SetString(PyExc_TypeError, "teacher_special must be a sequence of str, not one str");
      return -1;
    }
    PyObject* sequence = PySequence_Fast(teacher_special, "teacher_special must be a sequence of str");
    if (!sequence) return -1;
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    special_texts.resize(static_cast<size_t>(count));
    for (Py_ssize_t k = 0; k < count; ++k) {
      if (!read_string(PySequence_Fast_GET_ITEM(sequence, k), &special_texts[k])) {
        Py_DECREF(sequence);
        return -1;
      }
    }
    Py_DECREF(sequence);
  }
  auto* tokenizer = new BagTokenizer();
  tokenizer->settings.lowercase = lowercase;
  tokenizer->settings.strip_accents = strip_accents;
  tokenizer->settings.skipgram_max_gap = gap;
  tokenizer->settings.max_chars_per_word = max_chars;
  tokenizer->settings.teacher_window = window;
  tokenizer->unk_id = unk_id;
  Py_BEGIN_ALLOW_THREADS tokenizer->build(strings, is_special, static_cast<size_t>(teacher_first),
                                          static_cast<size_t>(teacher_count), special_texts);
  Py_END_ALLOW_THREADS self->tokenizer = tokenizer;
  return 0;
}

void Encoder_dealloc(EncoderObject* self) {
  delete self->tokenizer;
  Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

bool ready(EncoderObject* self) {
  if (self->tokenizer) return true;
  PyErr_SetString(PyExc_RuntimeError, "the encoder was not initialised");
  return false;
}

PyObject* Encoder_encode(EncoderObject* self, PyObject* args) {
  PyObject* text;
  long long max_entries = 512;
  if (!PyArg_ParseTuple(args, "U|L", &text, &max_entries) || !ready(self)) return nullptr;
  if (max_entries < 0) {
    PyErr_SetString(PyExc_ValueError, "max_entries must not be negative");
    return nullptr;
  }
  Workspace ws;
  int kind = PyUnicode_KIND(text);
  const void* data = PyUnicode_DATA(text);
  size_t length = static_cast<size_t>(PyUnicode_GET_LENGTH(text));
  Py_BEGIN_ALLOW_THREADS self->tokenizer->encode(kind, data, length, max_entries, ws);
  Py_END_ALLOW_THREADS return bag_to_list(ws.bag);
}

// The bags of a list of texts, tokenized without the GIL on up to `threads` threads; false with a Python error set.
bool encode_texts(EncoderObject* self, PyObject* texts, long long max_entries, int threads,
                  std::vector<std::vector<int32_t>>* bags) {
  if (!ready(self)) return false;
  if (max_entries < 0) {
    PyErr_SetString(PyExc_ValueError, "max_entries must not be negative");
    return false;
  }
  if (PyUnicode_Check(texts)) {
    PyErr_SetString(PyExc_TypeError, "texts must be a list of str, not one str");
    return false;
  }
  PyObject* sequence = PySequence_Fast(texts, "texts must be a list of str");
  if (!sequence) return false;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(sequence);
  struct Text {
    int kind;
    const void* data;
    size_t length;
  };
  std::vector<Text> items(static_cast<size_t>(n));
  std::vector<PyObject*> held;  // a reference to every text while the GIL is released (the list may change)
  held.reserve(static_cast<size_t>(n));
  auto release_all = [&held, sequence]() {
    for (PyObject* text : held) Py_DECREF(text);
    Py_DECREF(sequence);
  };
  size_t total = 0;
  for (Py_ssize_t k = 0; k < n; ++k) {
    PyObject* text = PySequence_Fast_GET_ITEM(sequence, k);
    if (!PyUnicode_Check(text)) {
      PyErr_Format(PyExc_TypeError, "item %zd is %s, not str", k, Py_TYPE(text)->tp_name);
      release_all();
      return false;
    }
    Py_INCREF(text);
    held.push_back(text);
    items[k] = Text{static_cast<int>(PyUnicode_KIND(text)), PyUnicode_DATA(text),
                    static_cast<size_t>(PyUnicode_GET_LENGTH(text))};
    total += items[k].length;
  }
  bags->assign(static_cast<size_t>(n), {});
  const BagTokenizer* tokenizer = self->tokenizer;
  Py_BEGIN_ALLOW_THREADS;
  std::atomic<size_t> next{0};
  auto work = [&]() {
    Workspace ws;
    constexpr size_t kGrab = 4;
    for (size_t first = next.fetch_add(kGrab); first < items.size(); first = next.fetch_add(kGrab)) {
      size_t last = std::min(items.size(), first + kGrab);
      for (size_t k = first; k < last; ++k) {
        tokenizer->encode(items[k].kind, items[k].data, items[k].length, max_entries, ws);
        (*bags)[k] = ws.bag;
      }
    }
  };
  size_t workers = threads > 1 && total >= kParallelChars ? std::min<size_t>(threads, (items.size() + 3) / 4) : 1;
  std::vector<std::thread> pool;
  for (size_t k = 1; k < workers; ++k) pool.emplace_back(work);
  work();
  for (std::thread& thread : pool) thread.join();
  Py_END_ALLOW_THREADS;
  release_all();
  return true;
}

PyObject* Encoder_encode_batch(EncoderObject* self, PyObject* args) {
  PyObject* texts;
  long long max_entries = 512;
  int threads = 1;
  if (!PyArg_ParseTuple(args, "O|Li", &texts, &max_entries, &threads)) return nullptr;
  std::vector<std::vector<int32_t>> bags;
  if (!encode_texts(self, texts, max_entries, threads, &bags)) return nullptr;
  const Py_ssize_t n = static_cast<Py_ssize_t>(bags.size());
  PyObject* result = PyList_New(n);
  if (!result) return nullptr;
  for (Py_ssize_t k = 0; k < n; ++k) {
    PyObject* bag = bag_to_list(bags[k]);
    if (!bag) {
      Py_DECREF(result);
      return nullptr;
    }
    PyList_SET_ITEM(result, k, bag);
  }
  return result;
}

// The bags of a batch as two flat buffers, no Python object per entry: every entry id (int32, text after text)
// and each text's first position in them, with the end last (int64, one more than there are texts).
PyObject* Encoder_encode_flat(EncoderObject* self, PyObject* args) {
  PyObject* texts;
  long long max_entries = 512;
  int threads = 1;
  if (!PyArg_ParseTuple(args, "O|Li", &texts, &max_entries, &threads)) return nullptr;
  std::vector<std::vector<int32_t>> bags;
  if (!encode_texts(self, texts, max_entries, threads, &bags)) return nullptr;
  size_t total = 0;
  for (const std::vector<int32_t>& bag : bags) total += bag.size();
  PyObject* ids = PyByteArray_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(total * sizeof(int32_t)));
  if (!ids) return nullptr;
  PyObject* offsets = PyByteArray_FromStringAndSize(nullptr, static_cast<Py_ssize_t>((bags.size() + 1) * sizeof(int64_t)));
  if (!offsets) {
    Py_DECREF(ids);
    return nullptr;
  }
  char* id_bytes = PyByteArray_AS_STRING(ids);
  char* offset_bytes = PyByteArray_AS_STRING(offsets);
  int64_t position = 0;
  for (size_t k = 0; k < bags.size(); ++k) {
    std::memcpy(offset_bytes + k * sizeof(int64_t), &position, sizeof(int64_t));
    if (!bags[k].empty()) {
      std::memcpy(id_bytes + static_cast<size_t>(position) * sizeof(int32_t), bags[k].data(), bags[k].size() * sizeof(int32_t));
    }
    position += static_cast<int64_t>(bags[k].size());
  }
  std::memcpy(offset_bytes + bags.size() * sizeof(int64_t), &position, sizeof(int64_t));
  return Py_BuildValue("(NN)", ids, offsets);
}

PyObject* Encoder_words(EncoderObject* self, PyObject* args) {
  PyObject* text;
  long long max_entries = -1;
  if (!PyArg_ParseTuple(args, "U|L", &text, &max_entries) || !ready(self)) return nullptr;
  Workspace ws;
  int kind = PyUnicode_KIND(text);
  const void* data = PyUnicode_DATA(text);
  size_t length = static_cast<size_t>(PyUnicode_GET_LENGTH(text));
  std::vector<std::u32string> words;
  if (max_entries >= 0) {
    self->tokenizer->collect_words(kind, data, length, max_entries, ws);
    for (const Word& word : ws.words) {
      if (word.length > word.stored) {
        PyErr_SetString(PyExc_ValueError, "a word is longer than the characters kept of it");
        return nullptr;
      }
      words.emplace_back(ws.chars.begin() + word.start, ws.chars.begin() + word.start + word.stored);
    }
  } else {
    // Every word, whole (tests and inspection).
    std::vector<uint32_t> normalized = self->tokenizer->normalize(kind, data, length, ws);
    std::u32string current;
    for (uint32_t cp : normalized) {
      uint16_t flags = record(cp).flags;
      if (flags & (kSpace | kSingle)) {
        if (!current.empty()) words.push_back(current);
        current.clear();
        if (flags & kSingle) words.emplace_back(1, static_cast<char32_t>(cp));
      } else {
        current.push_back(static_cast<char32_t>(cp));
      }
    }
    if (!current.empty()) words.push_back(current);
  }
  PyObject* result = PyList_New(static_cast<Py_ssize_t>(words.size()));
  if (!result) return nullptr;
  for (size_t k = 0; k < words.size(); ++k) {
    PyObject* word = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, words[k].data(),
                                               static_cast<Py_ssize_t>(words[k].size()));
    if (!word) {
      Py_DECREF(result);
      return nullptr;
    }
    PyList_SET_ITEM(result, static_cast<Py_ssize_t>(k), word);
  }
  return result;
}

PyObject* Encoder_normalize(EncoderObject* self, PyObject* args) {
  PyObject* text;
  if (!PyArg_ParseTuple(args, "U", &text) || !ready(self)) return nullptr;
  Workspace ws;
  std::vector<uint32_t> out = self->tokenizer->normalize(PyUnicode_KIND(text), PyUnicode_DATA(text),
                                                         static_cast<size_t>(PyUnicode_GET_LENGTH(text)), ws);
  return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, out.data(), static_cast<Py_ssize_t>(out.size()));
}

PyMethodDef kEncoderMethods[] = {
    {"encode", reinterpret_cast<PyCFunction>(Encoder_encode), METH_VARARGS,
     "encode(text, max_entries=512) -> list[int]: the bag of one text."},
    {"encode_batch", reinterpret_cast<PyCFunction>(Encoder_encode_batch), METH_VARARGS,
     "encode_batch(texts, max_entries=512, threads=1) -> list[list[int]]: bags of many texts, without the GIL."},
    {"encode_flat", reinterpret_cast<PyCFunction>(Encoder_encode_flat), METH_VARARGS,
     "encode_flat(texts, max_entries=512, threads=1) -> (bytearray, bytearray): the bags of many texts as flat "
     "int32 entry ids and int64 offsets (len(texts) + 1 of them), without the GIL."},
    {"words", reinterpret_cast<PyCFunction>(Encoder_words), METH_VARARGS,
     "words(text, max_entries=-1) -> list[str]: normalized words (those a bag may use when max_entries >= 0)."},
    {"normalize", reinterpret_cast<PyCFunction>(Encoder_normalize), METH_VARARGS,
     "normalize(text) -> str: the normalized text."},
    {nullptr, nullptr, 0, nullptr}};

PyTypeObject kEncoderType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_fastbag",
                       "The compiled bag tokenizer of bertapprox_hf (see fast_bags.py).", -1, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__fastbag(void) {
  kEncoderType.tp_name = "bertapprox_hf._fastbag.Encoder";
  kEncoderType.tp_basicsize = sizeof(EncoderObject);
  kEncoderType.tp_flags = Py_TPFLAGS_DEFAULT;
  kEncoderType.tp_doc = "A bag tokenizer over a vocabulary (built once, read-only, usable from any thread).";
  kEncoderType.tp_new = PyType_GenericNew;
  kEncoderType.tp_init = reinterpret_cast<initproc>(Encoder_init);
  kEncoderType.tp_dealloc = reinterpret_cast<destructor>(Encoder_dealloc);
  kEncoderType.tp_methods = kEncoderMethods;
  for (uint32_t cp = 0; cp < 128; ++cp) kAsciiFlags[cp] = record(cp).flags;
  if (PyType_Ready(&kEncoderType) < 0) return nullptr;
  PyObject* module = PyModule_Create(&kModule);
  if (!module) return nullptr;
  Py_INCREF(&kEncoderType);
  if (PyModule_AddObject(module, "Encoder", reinterpret_cast<PyObject*>(&kEncoderType)) < 0 ||
      PyModule_AddIntConstant(module, "ALGORITHM_VERSION", kAlgorithmVersion) < 0 ||
      PyModule_AddStringConstant(module, "UNIDATA_VERSION", kUnidataVersion) < 0 ||
      PyModule_AddStringConstant(module, "REGEX_VERSION", kRegexVersion) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
