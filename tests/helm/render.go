// render: the Helm chart's templates rendered without helm, for tests on machines that
// have none. Go's text/template with Sprig's functions (the library Helm uses, Debian's
// golang-github-masterminds-sprig-dev) and the additions Helm makes: include, tpl, toYaml,
// fromYaml, toJson, required, lookup (always empty, as in `helm template`), .Files.Get,
// .Capabilities.APIVersions.Has, .Template.Name/BasePath, .Release, .Chart. Values load as
// Helm loads them (YAML through JSON: numbers are float64) and toYaml writes as Helm's
// sigs.k8s.io/yaml does (through JSON), so what renders here renders alike under helm.
//
//	render [--name=R] [--namespace=N] [--api-versions=G/V,...] [--notes] CHART [VALUES.yaml...]
//
// Prints every manifest, each after "# Source: <chart>/templates/<file>" and "---" as
// `helm template` does; --notes prints the rendered NOTES.txt instead.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v2"
)

// jsonish converts what yaml.v2 decodes into what encoding/json would have decoded.
func jsonish(in []byte) (map[string]interface{}, error) {
	var raw interface{}
	if err := yaml.Unmarshal(in, &raw); err != nil {
		return nil, err
	}
	b, err := json.Marshal(stringKeys(raw))
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func stringKeys(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := map[string]interface{}{}
		for k, e := range t {
			m[fmt.Sprint(k)] = stringKeys(e)
		}
		return m
	case []interface{}:
		for i := range t {
			t[i] = stringKeys(t[i])
		}
	}
	return v
}

// merge lays src over dst, maps key by key (Helm's coalescing of values files).
func merge(dst, src map[string]interface{}) {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				merge(dm, sm)
				continue
			}
		}
		if v == nil {
			delete(dst, k)
			continue
		}
		dst[k] = v
	}
}

func toYaml(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var doc yaml.MapSlice
	var any interface{}
	if len(b) > 0 && b[0] == '{' {
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return ""
		}
		any = doc
	} else if err := yaml.Unmarshal(b, &any); err != nil {
		return ""
	}
	out, err := yaml.Marshal(any)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(out), "\n")
}

type Files struct{ root string }

func (f Files) Get(name string) string {
	b, err := os.ReadFile(filepath.Join(f.root, name))
	if err != nil {
		return ""
	}
	return string(b)
}

type VersionSet []string

func (v VersionSet) Has(gv string) bool {
	for _, x := range v {
		if x == gv {
			return true
		}
	}
	return false
}

func main() {
	name := flag.String("name", "nexusflow", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	apis := flag.String("api-versions", "", "extra API versions the cluster has, comma-separated")
	notes := flag.Bool("notes", false, "print NOTES.txt instead of the manifests")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: render [flags] CHART [VALUES.yaml...]")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Args()[1:], *name, *namespace, *apis, *notes); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func run(chartDir string, valueFiles []string, name, namespace, apis string, notes bool) error {
	read := func(path string) (map[string]interface{}, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		m, err := jsonish(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		return m, nil
	}
	meta, err := read(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	values, err := read(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range valueFiles {
		over, err := read(f)
		if err != nil {
			return err
		}
		merge(values, over)
	}
	chartName := fmt.Sprint(meta["name"])
	versions := VersionSet{"v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1"}
	for _, gv := range strings.Split(apis, ",") {
		if gv != "" {
			versions = append(versions, gv)
		}
	}
	top := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{"Name": name, "Namespace": namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1},
		"Chart": map[string]interface{}{"Name": meta["name"], "Version": meta["version"],
			"AppVersion": meta["appVersion"], "Description": meta["description"]},
		"Capabilities": map[string]interface{}{"APIVersions": versions,
			"KubeVersion": map[string]interface{}{"Version": "v1.30.0", "GitVersion": "v1.30.0",
				"Major": "1", "Minor": "30"}},
		"Files": Files{chartDir},
	}

	root := template.New("gotpl")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = toYaml
	funcs["toJson"] = func(v interface{}) string { b, _ := json.Marshal(v); return string(b) }
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		m, err := jsonish([]byte(s))
		if err != nil {
			return map[string]interface{}{"Error": err.Error()}
		}
		return m
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || fmt.Sprint(v) == "" {
			return v, errors.New(msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	funcs["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, data)
		return strings.ReplaceAll(buf.String(), "<no value>", ""), err
	}
	root.Funcs(funcs).Option("missingkey=zero")

	dir := filepath.Join(chartDir, "templates")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		tname := chartName + "/templates/" + e.Name()
		if _, err := root.New(tname).Parse(string(b)); err != nil {
			return err
		}
		files = append(files, e.Name())
	}
	sort.Strings(files)
	var out bytes.Buffer
	for _, f := range files {
		isNotes := f == "NOTES.txt"
		if strings.HasPrefix(f, "_") || isNotes != notes {
			continue
		}
		tname := chartName + "/templates/" + f
		top["Template"] = map[string]interface{}{"Name": tname, "BasePath": chartName + "/templates"}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, tname, top); err != nil {
			return err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if notes {
			out.WriteString(text)
			continue
		}
		// One source file may hold several documents; whitespace-only ones are dropped.
		for _, doc := range strings.Split(text, "\n---") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", tname, strings.TrimLeft(doc, "\n"))
		}
	}
	_, err = os.Stdout.Write(out.Bytes())
	return err
}
