// Command-line overrides of the cluster file (--set key.path=value): each is set in the
// config's YAML tree, which is read again, then the whole config is re-validated.
#include "cluster-config/config_reader.h"

namespace troupe {

namespace {

using config_detail::indexed;
using config_detail::join;
using config_detail::read_tree;
using config_detail::reader;

/// One step of a key path: a key, or an index into a list.
struct path_step {
  std::string key;
  long index = -1;
};

std::vector<path_step> split_path(const std::string& path, const std::string& source) {
  std::vector<path_step> steps;
  auto bad = [&](const std::string& why) -> config_error {
    return config_error(source, "", "bad key path \"" + path + "\": " + why);
  };
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '[') {
      std::size_t close = path.find(']', i);
      if (steps.empty() || close == std::string::npos || close == i + 1 || close - i > 7) throw bad("bad [index]");
      const std::string digits = path.substr(i + 1, close - i - 1);
      if (!std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
        throw bad("bad [index]");
      steps.push_back({"", std::stol(digits)});
      i = close + 1;
      if (i < path.size() && path[i] != '.' && path[i] != '[') throw bad("expected . or [ after ]");
      if (i < path.size() && path[i] == '.') ++i;
      continue;
    }
    std::size_t end = path.find_first_of(".[", i);
    if (end == std::string::npos) end = path.size();
    if (end == i) throw bad("empty key");
    steps.push_back({path.substr(i, end - i), -1});
    i = end;
    if (i < path.size() && path[i] == '.' && ++i == path.size()) throw bad("empty key");
  }
  if (steps.empty()) throw bad("empty key");
  return steps;
}

/// Sets `value` at `steps` inside `root`, creating maps for missing keys (the parser then
/// rejects unknown ones) and appending when an index equals the list's length.
void set_at(YAML::Node root, const std::vector<path_step>& steps, const YAML::Node& value,
            const std::string& source) {
  YAML::Node cur = root;
  std::string where;
  for (std::size_t s = 0; s < steps.size(); ++s) {
    const path_step& step = steps[s];
    const bool last = s + 1 == steps.size();
    if (step.index < 0) {
      if (cur.IsDefined() && !cur.IsNull() && !cur.IsMap())
        throw config_error(source, where, "is a value, not a section: it has no key \"" + step.key + "\"");
      where = join(where, step.key);
      if (last) {
        cur[step.key] = value;
        return;
      }
      YAML::Node next = cur[step.key];
      cur.reset(next);
      continue;
    }
    if (!cur.IsDefined()) {
      cur = YAML::Node(YAML::NodeType::Null);  // an unknown key: the parser names it, with a suggestion
      return;
    }
    if (!cur.IsSequence()) throw config_error(source, where, "is not a list: it has no [index]");
    const std::size_t size = cur.size(), idx = static_cast<std::size_t>(step.index);
    if (idx > size)
      throw config_error(source, indexed(where, idx),
                         "no such entry (" + where + " has " + std::to_string(size) + "; use [" +
                             std::to_string(size) + "] to append one)");
    where = indexed(where, idx);
    if (idx == size) cur.push_back(last ? value : YAML::Node(YAML::NodeType::Map));
    else if (last) cur[idx] = value;
    if (last) return;
    YAML::Node next = cur[idx];
    cur.reset(next);
  }
}

}  // namespace

void apply_overrides(cluster_config& c, const std::vector<std::string>& overrides) {
  YAML::Node root = YAML::Load(to_yaml(c));
  cluster_config next = c;
  std::string applied;
  for (const std::string& o : overrides) {
    const std::string source = "--set " + o;
    const std::size_t eq = o.find('=');
    if (eq == std::string::npos)
      throw config_error(source, "", "an override reads key.path=value (for example parallel.tensor=2)");
    std::string path = o.substr(0, eq);
    path.erase(0, path.find_first_not_of(" \t"));
    path.erase(path.find_last_not_of(" \t") + 1);
    YAML::Node value;
    try {
      value = YAML::Load(o.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      throw config_error(source, path, "the value is not valid YAML: " + e.msg);
    }
    set_at(root, split_path(path, source), value, source);
    try {
      next = read_tree(root, reader(source, false));
    } catch (const YAML::Exception& e) {
      throw config_error(source, path, "YAML error: " + e.msg);
    }
    applied += (applied.empty() ? "" : ", ") + source;
  }
  next.source = c.source;
  cluster_config labelled = next;
  labelled.source = (c.source.empty() ? "<config>" : c.source) + (applied.empty() ? "" : " with " + applied);
  validate(labelled);
  c = std::move(next);
}

}  // namespace troupe
