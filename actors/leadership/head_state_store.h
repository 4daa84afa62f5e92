#pragma once
/// The head's state on disk (issue 15): one file, written atomically, with the previous
/// good version kept beside it, so that neither a crash in the middle of a save nor one
/// torn or damaged file loses the cluster.
///
/// In `directory`: `<file>` (the latest state), `<file>.prev` (the one before) and, only
/// while a save runs or after a crash in one, `<file>.tmp` and `<file>.prev.tmp`.
#include <filesystem>
#include <optional>
#include <string>

#include "actors/leadership/head_state.h"

namespace troupe {

/// Where the store keeps its files.
struct head_state_store_options {
  std::filesystem::path directory;          ///< created on the first save when missing
  std::string file_name = "head_state.bin";  ///< the latest state; `.prev` and `.tmp` beside it
};

/// What load() found.
struct loaded_head_state {
  head_state state;              ///< the state read
  std::filesystem::path from;    ///< the file it came from (the main file or `.prev`)
  bool fell_back = false;        ///< `from` is `.prev`: the main file is missing or unreadable
  std::string why;               ///< when fell_back: what is wrong with the main file
};

/// Saves and loads the head's state in one directory. Not thread-safe: one owner (a state
/// replica actor, or the leader).
class head_state_store {
 public:
  /// A store over `o.directory` (nothing is touched until save() or load()).
  explicit head_state_store(head_state_store_options o);

  /// Writes `s` atomically: encode() to `<file>.tmp`, fsync it, hard-link the current
  /// `<file>` to `<file>.prev` (through `<file>.prev.tmp` and a rename, so `.prev` is
  /// always whole; a copy where the file system has no hard links; skipped when the
  /// current `<file>` does not decode, so a good `.prev` is never replaced by a damaged
  /// file), rename `<file>.tmp` over `<file>`, fsync the directory. A crash at any point
  /// leaves `<file>` either the old or the new state, whole. Throws
  /// std::runtime_error naming the file and the system error when a step fails.
  void save(const head_state& s);

  /// The latest good state: nothing when neither `<file>` nor `<file>.prev` exists; the
  /// state of `<file>`; or, when `<file>` is missing or does not decode, the state of
  /// `<file>.prev` (logged as a warning naming both files and what is wrong). Throws
  /// head_state_error naming each file and its problem when no good state is left: a
  /// corrupt file never reads as an empty cluster. A leftover `<file>.tmp` is ignored.
  std::optional<loaded_head_state> load() const;

  /// `<directory>/<file>`.
  std::filesystem::path main_path() const;
  /// `<directory>/<file>.prev`.
  std::filesystem::path previous_path() const;
  /// `<directory>/<file>.tmp`.
  std::filesystem::path temp_path() const;

 private:
  head_state_store_options opts_;
};

}  // namespace troupe
