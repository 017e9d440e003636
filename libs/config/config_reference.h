#pragma once
// The configuration reference: every key nexusflow.yaml accepts, its type, default and
// meaning, in one table next to the parser. `nexusflow config-reference` renders it as the
// user documentation's page (docs/configuration.md is that output, checked by a test), and
// a test parses the table's example config while recording every mapping the parser
// accepts, so the table and the parser cannot disagree: a key the parser accepts and the
// table lacks, or one the table lists and the parser refuses, fails it.
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace nexusflow {

struct ConfigKey {
  // Dotted path; "<name>" is a mapping key the user chooses, "[]" a list item.
  const char* path;
  const char* type;           // "integer 1–256", "host:port", "USD", … ; "section" for a mapping
  const char* default_value;  // as written in YAML; "" when none (required, or empty)
  const char* example;        // a valid value for the example config; "" for a section
  const char* description;
};

const std::vector<ConfigKey>& ConfigReference();

// The reference page (Markdown). `config_text` is a configuration file as written (before
// ${VAR} substitution), whose environment variables are listed with the keys they set;
// empty: no such section.
std::string ConfigReferenceMarkdown(const std::string& config_text, const std::string& config_name);

// A configuration that sets every key of the table to its example value.
std::string ExampleConfigYaml();

// Test hook: called with (path, allowed keys) for every mapping the parser checks. Paths
// have list indexes ("routing.models[0]"). Not thread-safe; null to remove.
void SetMappingObserver(std::function<void(const std::string&, const std::set<std::string>&)> observer);

}  // namespace nexusflow
