package deploy

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	esdbclient "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/redis/go-redis/v9"
)

// Paths are relative to this package's directory, where go test runs.
const (
	repoRoot          = ".."
	dockerfilePath    = "Dockerfile"
	composePath       = "compose.yaml"
	kubeDir           = "kubernetes"
	kustomizationFile = "kustomization.yaml"
	signingKeyFile    = "token-signing.key" // cmd/mysafe's name for it
)

// --- YAML ---------------------------------------------------------------

func TestEveryYAMLFileParses(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no YAML file under deploy/")
	}
	for _, path := range files {
		docs := yamlDocs(t, path)
		if len(docs) == 0 {
			t.Errorf("%s holds no YAML document", path)
		}
		for i, doc := range docs {
			// A compose file, a Kubernetes object and a Kustomization are
			// all mappings at the top.
			var m map[string]any
			if err := yaml.NodeToValue(doc, &m); err != nil {
				t.Errorf("%s: document %d is not a mapping: %s", path, i+1, yaml.FormatError(err, false, true))
			}
		}
	}
}

// yamlDocs parses a YAML file and returns the bodies of its documents,
// leaving out empty ones (a file may open with comments and "---").
func yamlDocs(t *testing.T, path string) []ast.Node {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseBytes(src, parser.ParseComments)
	if err != nil {
		t.Fatalf("%s: %s", path, yaml.FormatError(err, false, true))
	}
	var docs []ast.Node
	for _, d := range f.Docs {
		if d.Body == nil || d.Body.Type() == ast.CommentType {
			continue
		}
		docs = append(docs, d.Body)
	}
	return docs
}

func decodeNode(t *testing.T, where string, node ast.Node, v any) {
	t.Helper()
	if err := yaml.NodeToValue(node, v); err != nil {
		t.Fatalf("%s: %s", where, yaml.FormatError(err, false, true))
	}
}

// --- Dockerfile -------------------------------------------------------------

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, ...
	args string
}

func (in instruction) String() string { return fmt.Sprintf("line %d: %s %s", in.line, in.cmd, in.args) }

// stage is a build stage: its FROM and the instructions after it.
type stage struct {
	image, name string
	instrs      []instruction
}

// parseDockerfile reads the instructions the way Docker does for what this
// Dockerfile uses: comment lines (also inside a continuation) dropped, lines
// ending in a backslash joined with the next. Heredocs are not supported.
func parseDockerfile(src string) ([]stage, error) {
	var stages []stage
	var cur *instruction
	add := func(in instruction) error {
		if in.cmd == "FROM" {
			w := strings.Fields(in.args)
			w = slices.DeleteFunc(w, func(s string) bool { return strings.HasPrefix(s, "--") })
			st := stage{image: w[0]}
			if len(w) == 3 && strings.EqualFold(w[1], "AS") {
				st.name = w[2]
			}
			stages = append(stages, st)
			return nil
		}
		if len(stages) == 0 {
			return fmt.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
		}
		s := &stages[len(stages)-1]
		s.instrs = append(s.instrs, in)
		return nil
	}
	for i, line := range strings.Split(src, "\n") {
		text := strings.TrimSpace(line)
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		more := strings.HasSuffix(text, `\`)
		text = strings.TrimSpace(strings.TrimSuffix(text, `\`))
		if cur == nil {
			cmd, args, _ := strings.Cut(text, " ")
			cur = &instruction{line: i + 1, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		} else {
			cur.args += " " + text
		}
		if !more {
			if err := add(*cur); err != nil {
				return nil, err
			}
			cur = nil
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("line %d: the last instruction ends in a continuation", cur.line)
	}
	return stages, nil
}

// env is what the stage's ENV instructions set (NAME=value form only).
func (s stage) env() (map[string]string, error) {
	env := map[string]string{}
	for _, in := range s.instrs {
		if in.cmd != "ENV" {
			continue
		}
		words, err := shellWords(in.args)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", in.line, err)
		}
		for _, w := range words {
			k, v, ok := strings.Cut(w, "=")
			if !ok {
				return nil, fmt.Errorf("line %d: ENV %q: use the NAME=value form", in.line, in.args)
			}
			env[k] = v
		}
	}
	return env, nil
}

// all returns the stage's instructions of one kind.
func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// goBuild is the Dockerfile's `go build` RUN line taken apart.
type goBuild struct {
	line int
	env  []string // NAME=value assignments before the command
	argv []string // go build ...
}

// output is the -o argument.
func (b goBuild) output() string {
	for i, a := range b.argv {
		if v, ok := strings.CutPrefix(a, "-o="); ok {
			return v
		}
		if a == "-o" && i+1 < len(b.argv) {
			return b.argv[i+1]
		}
	}
	return ""
}

// withOutput is argv writing the binary to path instead.
func (b goBuild) withOutput(path string) []string {
	argv := slices.Clone(b.argv)
	for i, a := range argv {
		if strings.HasPrefix(a, "-o=") {
			argv[i] = "-o=" + path
		} else if a == "-o" && i+1 < len(argv) {
			argv[i+1] = path
		}
	}
	return argv
}

// parseRun takes a shell-form RUN instruction apart: RUN flags (--mount=...),
// variable assignments, then the command's words.
func parseRun(in instruction) (goBuild, error) {
	if strings.HasPrefix(in.args, "[") {
		return goBuild{}, fmt.Errorf("line %d: RUN in exec form; this test replays the shell form", in.line)
	}
	words, err := shellWords(in.args)
	if err != nil {
		return goBuild{}, fmt.Errorf("line %d: %v", in.line, err)
	}
	for len(words) > 0 && strings.HasPrefix(words[0], "--") {
		words = words[1:]
	}
	b := goBuild{line: in.line}
	assignment := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	for len(words) > 0 && assignment.MatchString(words[0]) {
		b.env = append(b.env, words[0])
		words = words[1:]
	}
	b.argv = words
	return b, nil
}

// shellWords splits a command line as sh does for a plain command: words
// separated by blanks, single and double quotes, backslash escapes. It
// refuses expansions and operators, so that the test never replays
// something other than what the image build runs.
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated single quote")
			}
			w.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '"':
			inWord = true
			for i++; ; i++ {
				if i >= len(s) {
					return nil, errors.New("unterminated double quote")
				}
				if s[i] == '"' {
					break
				}
				if s[i] == '$' || s[i] == '`' {
					return nil, fmt.Errorf("expansion in %q is not replayed by this test", s)
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				w.WriteByte(s[i])
			}
		case c == '\\':
			if i+1 >= len(s) {
				return nil, errors.New("trailing backslash")
			}
			i++
			w.WriteByte(s[i])
			inWord = true
		case strings.IndexByte("$`;&|<>(){}*?[]~#!", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q in %q is not replayed by this test", c, s)
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// image is what the Dockerfile says about the build and the final image.
type image struct {
	build, final stage
	goBuild      goBuild
	env          map[string]string // the final stage's ENV
	entrypoint   []string
}

func readImage(t *testing.T) image {
	t.Helper()
	src, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	stages, err := parseDockerfile(string(src))
	if err != nil {
		t.Fatalf("%s: %v", dockerfilePath, err)
	}
	if len(stages) < 2 {
		t.Fatalf("%s has %d stage(s); want a build stage and a final one", dockerfilePath, len(stages))
	}
	img := image{final: stages[len(stages)-1]}
	var builds []goBuild
	for _, st := range stages[:len(stages)-1] {
		for _, in := range st.all("RUN") {
			if !strings.Contains(in.args, "go build") {
				continue
			}
			b, err := parseRun(in)
			if err != nil {
				t.Fatalf("%s: %v", dockerfilePath, err)
			}
			img.build = st
			builds = append(builds, b)
		}
	}
	if len(builds) != 1 {
		t.Fatalf("%s has %d RUN lines with go build; want exactly 1", dockerfilePath, len(builds))
	}
	img.goBuild = builds[0]
	if img.env, err = img.final.env(); err != nil {
		t.Fatalf("%s: %v", dockerfilePath, err)
	}
	eps := img.final.all("ENTRYPOINT")
	if len(eps) != 1 {
		t.Fatalf("%s: the final stage has %d ENTRYPOINT instructions; want 1", dockerfilePath, len(eps))
	}
	if err := json.Unmarshal([]byte(eps[0].args), &img.entrypoint); err != nil || len(img.entrypoint) == 0 {
		t.Fatalf("%s: line %d: ENTRYPOINT %s: want the exec (JSON) form, so that SIGTERM reaches mysafe (%v)",
			dockerfilePath, eps[0].line, eps[0].args, err)
	}
	return img
}

// dataDir and port are the final image's settings for the data dir and the
// listen port.
func (img image) dataDir() string { return img.env["MYSAFE_DATA_DIR"] }

func (img image) port() string {
	_, port, _ := net.SplitHostPort(img.env["MYSAFE_ADDR"])
	return port
}

func TestDockerfile(t *testing.T) {
	img := readImage(t)

	t.Run("build stage", func(t *testing.T) {
		goMod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
		if m == nil {
			t.Fatal("go.mod has no go line")
		}
		if want := "golang:" + string(m[1]); img.build.image != want {
			t.Errorf("build stage FROM %s; want %s, go.mod's go line", img.build.image, want)
		}
		b := img.goBuild
		if !slices.Contains(b.env, "CGO_ENABLED=0") {
			t.Errorf("line %d: go build runs with %q; want CGO_ENABLED=0: distroless/static has no libc", b.line, b.env)
		}
		if len(b.argv) < 2 || b.argv[0] != "go" || b.argv[1] != "build" {
			t.Fatalf("line %d: the command is %q; want go build ...", b.line, b.argv)
		}
		if pkg := b.argv[len(b.argv)-1]; pkg != "./cmd/mysafe" {
			t.Errorf("line %d: go build builds %s; want ./cmd/mysafe", b.line, pkg)
		}
		if !slices.Contains(b.argv, "-trimpath") {
			t.Errorf("line %d: go build without -trimpath: the binary would hold the builder's paths", b.line)
		}
		if b.output() == "" {
			t.Errorf("line %d: go build has no -o", b.line)
		}

		// Modules download in a layer of their own, before the sources
		// come in, so that a source edit reuses it.
		order := map[string]int{}
		for i, in := range img.build.instrs {
			switch {
			case in.cmd == "COPY" && strings.Contains(in.args, "go.mod") && strings.Contains(in.args, "go.sum"):
				order["copy go.mod"] = i + 1
			case in.cmd == "RUN" && strings.Contains(in.args, "go mod download"):
				order["go mod download"] = i + 1
			case in.cmd == "COPY" && strings.Fields(in.args)[0] == ".":
				order["copy ."] = i + 1
			case in.line == b.line:
				order["go build"] = i + 1
			}
		}
		steps := []string{"copy go.mod", "go mod download", "copy .", "go build"}
		for i, s := range steps {
			if order[s] == 0 {
				t.Errorf("build stage has no %q step", s)
			} else if i > 0 && order[s] < order[steps[i-1]] {
				t.Errorf("build stage runs %q before %q", s, steps[i-1])
			}
		}
	})

	t.Run("final stage", func(t *testing.T) {
		const base = "gcr.io/distroless/static-debian12:nonroot"
		if img.final.image != base {
			t.Errorf("final stage FROM %s; want %s", img.final.image, base)
		}
		if want := []string{"/mysafe", "serve"}; !slices.Equal(img.entrypoint, want) {
			t.Errorf("ENTRYPOINT %q; want %q", img.entrypoint, want)
		}
		copied := false
		dataDirOwned := false
		for _, in := range img.final.all("COPY") {
			w, err := shellWords(in.args)
			if err != nil {
				t.Fatalf("line %d: %v", in.line, err)
			}
			flags, paths := w[:0:0], w
			for len(paths) > 0 && strings.HasPrefix(paths[0], "--") {
				flags, paths = append(flags, paths[0]), paths[1:]
			}
			fromBuild := slices.ContainsFunc(flags, func(f string) bool { return strings.HasPrefix(f, "--from=") })
			if fromBuild && slices.Equal(paths, []string{img.goBuild.output(), img.entrypoint[0]}) {
				copied = true
			}
			if len(paths) > 0 && paths[len(paths)-1] == img.dataDir() && slices.Contains(flags, "--chown=65532:65532") {
				dataDirOwned = true
			}
		}
		if !copied {
			t.Errorf("no COPY --from of the build output %s to %s, the entrypoint", img.goBuild.output(), img.entrypoint[0])
		}
		users := img.final.all("USER")
		if len(users) == 0 || !strings.HasPrefix(users[len(users)-1].args, "65532") {
			t.Errorf("USER %v; want 65532, distroless's nonroot user", users)
		}

		host, port, err := net.SplitHostPort(img.env["MYSAFE_ADDR"])
		if err != nil || host != "0.0.0.0" {
			t.Errorf("ENV MYSAFE_ADDR=%q; want 0.0.0.0:PORT: the default, loopback, is unreachable from outside a container", img.env["MYSAFE_ADDR"])
		}
		if exposed := img.final.all("EXPOSE"); len(exposed) != 1 || exposed[0].args != port {
			t.Errorf("EXPOSE %v; want %s, MYSAFE_ADDR's port", exposed, port)
		}
		if img.dataDir() == "" {
			t.Fatal("no ENV MYSAFE_DATA_DIR")
		}
		if vols := img.final.all("VOLUME"); len(vols) != 1 || vols[0].args != img.dataDir() {
			t.Errorf("VOLUME %v; want %s, MYSAFE_DATA_DIR", vols, img.dataDir())
		}
		if !dataDirOwned {
			t.Errorf("the data dir %s is not made in the image with COPY --chown=65532:65532: a fresh volume would be root's and mysafe could not write its keys", img.dataDir())
		}
	})

	t.Run("dockerignore", func(t *testing.T) {
		src, err := os.ReadFile(dockerfilePath + ".dockerignore")
		if err != nil {
			t.Fatal(err)
		}
		rules := strings.Fields(string(src))
		// compose.yaml's .env holds the master key.
		for _, want := range []string{"**/.env", ".git"} {
			if !slices.Contains(rules, want) {
				t.Errorf("%s.dockerignore does not ignore %s", dockerfilePath, want)
			}
		}
		for _, r := range rules {
			if r == "go.mod" || r == "go.sum" || r == "cmd" || r == "*" {
				t.Errorf("%s.dockerignore ignores %s, which the build needs", dockerfilePath, r)
			}
		}
	})
}

// shellJoin quotes words for a message, so that it can be pasted into sh.
func shellJoin(words []string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		if w == "" || strings.ContainsAny(w, " \t\"'\\$`;&|<>()*?[]#~!") {
			w = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		quoted[i] = w
	}
	return strings.Join(quoted, " ")
}

// TestDockerfileBuildCompilesServer runs the Dockerfile's own go build line
// from the repository root, as the image build does, so that a change that
// breaks the image's build fails here; then it runs the binary with the
// image's settings.
func TestDockerfileBuildCompilesServer(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles ./cmd/mysafe (minutes on a cold build cache); runs in every go test without -short, as in CI")
	}
	img := readImage(t)
	bin := filepath.Join(t.TempDir(), "mysafe")
	argv := img.goBuild.withOutput(bin)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = repoRoot
	// Later entries win: the Dockerfile's assignments override the caller's.
	cmd.Env = append(os.Environ(), img.goBuild.env...)
	command := shellJoin(append(slices.Clone(img.goBuild.env), argv...))
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s line %d, run from the repository root: %s: %v\n%s", dockerfilePath, img.goBuild.line, command, err, out)
	}
	t.Logf("%s line %d: built with %s in %v", dockerfilePath, img.goBuild.line, command, time.Since(start).Round(time.Second))

	t.Run("serves with the image's settings", func(t *testing.T) {
		serveLikeTheImage(t, bin, img)
	})
}

// serveLikeTheImage runs the entrypoint with the image's ENV, but on a free
// loopback port and a fresh data dir, the master key from the environment
// as compose and Kubernetes give it, and the embedded store and Redis. It
// checks the probes the deployments use, the token command compose.yaml
// documents, and a clean exit on SIGTERM, which docker stop and the kubelet
// send.
func serveLikeTheImage(t *testing.T, bin string, img image) {
	if runtime.GOOS == "windows" {
		t.Skip("stops the server with SIGTERM, which Windows lacks; runs on Linux, as in CI")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dataDir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)

	// The caller's environment minus its MYSAFE_* settings, then the
	// image's, then this test's.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "MYSAFE_") })
	for k, v := range img.env {
		env = append(env, k+"="+v)
	}
	env = append(env, "MYSAFE_ADDR="+addr, "MYSAFE_DATA_DIR="+dataDir,
		"MYSAFE_MASTER_KEY="+base64.StdEncoding.EncodeToString(key))

	var logs lockedBuffer
	serve := exec.Command(bin, img.entrypoint[1:]...)
	serve.Env = env
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			serve.Process.Kill()
			<-exited
		}
	})

	base := "http://" + addr
	client := &http.Client{Timeout: 2 * time.Second}
	waitFor := func(path string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			resp, err := client.Get(base + path)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
			select {
			case err := <-exited:
				stopped = true
				t.Fatalf("mysafe serve exited (%v) before GET %s answered 200; output:\n%s", err, path, logs.String())
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s did not answer 200 within 60 s (last: %v); output:\n%s", path, err, logs.String())
			}
		}
	}
	waitFor("/healthz")
	waitFor("/readyz")

	tokenCmd := exec.Command(bin, "token", "--data-dir", dataDir, "--user", "admin", "--role", "admin")
	tokenCmd.Env = env
	out, err := tokenCmd.Output()
	if err != nil {
		t.Fatalf("mysafe token: %v", err)
	}
	token := strings.TrimSpace(string(out))
	if strings.Count(token, ".") != 2 || strings.ContainsAny(token, " \n") {
		t.Fatalf("mysafe token printed %q; want one JWT", out)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/secrets", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /api/v1/secrets with the token from mysafe token: %s; want 200 OK", resp.Status)
	}

	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("after SIGTERM mysafe serve exited with %v; want 0; output:\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("mysafe serve still runs 30 s after SIGTERM; output:\n%s", logs.String())
	}
}

// lockedBuffer collects a process's output while the test may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// --- compose ------------------------------------------------------------

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

func TestCompose(t *testing.T) {
	docs := yamlDocs(t, composePath)
	if len(docs) != 1 {
		t.Fatalf("%s holds %d documents; want 1", composePath, len(docs))
	}
	var c composeFile
	decodeNode(t, composePath, docs[0], &c)
	img := readImage(t)

	for _, name := range []string{"kurrentdb", "redis", "mysafe"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("%s has no service %s", composePath, name)
		}
	}
	for _, name := range []string{"kurrentdb", "redis"} {
		if hc := c.Services[name].Healthcheck; hc == nil || len(hc.Test) == 0 {
			t.Errorf("service %s has no healthcheck: mysafe's depends_on waits for it", name)
		}
	}
	if hc := c.Services["kurrentdb"].Healthcheck; hc != nil && !strings.Contains(strings.Join(hc.Test, " "), ":2113/health/live") {
		t.Errorf("kurrentdb healthcheck %q; want it to ask :2113/health/live", hc.Test)
	}
	for name, s := range c.Services {
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("service %s publishes %q on every interface; want 127.0.0.1 only", name, p)
			}
		}
	}

	m := c.Services["mysafe"]
	if m.Build == nil {
		t.Fatal("service mysafe is not built")
	}
	// The build must be the Dockerfile under test, with the repository root
	// as its context.
	ctx := filepath.Join(".", m.Build.Context)
	if abs, _ := filepath.Abs(ctx); abs != mustAbs(t, repoRoot) {
		t.Errorf("mysafe build context %s; want the repository root", m.Build.Context)
	}
	if df := filepath.Join(ctx, m.Build.Dockerfile); mustAbs(t, df) != mustAbs(t, dockerfilePath) {
		t.Errorf("mysafe builds %s; want deploy/Dockerfile", m.Build.Dockerfile)
	}
	for _, dep := range []string{"kurrentdb", "redis"} {
		if got := m.DependsOn[dep].Condition; got != "service_healthy" {
			t.Errorf("mysafe depends_on %s with condition %q; want service_healthy", dep, got)
		}
	}
	if !slices.Contains(m.Ports, "127.0.0.1:"+img.port()+":"+img.port()) {
		t.Errorf("mysafe ports %q; want 127.0.0.1:%s:%s", m.Ports, img.port(), img.port())
	}
	mounted := false
	for _, v := range m.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == img.dataDir() {
			mounted = true
			if _, ok := c.Volumes[parts[0]]; !ok {
				t.Errorf("mysafe mounts volume %s, which is not declared", parts[0])
			}
		}
	}
	if !mounted {
		t.Errorf("mysafe mounts nothing at the data dir %s: its token signing key would change with every new container", img.dataDir())
	}

	env := m.Environment
	if !strings.HasPrefix(env["MYSAFE_MASTER_KEY"], "${MYSAFE_MASTER_KEY:?") {
		t.Errorf("MYSAFE_MASTER_KEY=%q; want ${MYSAFE_MASTER_KEY:?...}, required from .env or the shell", env["MYSAFE_MASTER_KEY"])
	}
	cfg := parseEventStoreURL(t, "compose MYSAFE_EVENTSTORE_URL", env["MYSAFE_EVENTSTORE_URL"])
	if cfg != nil {
		if host, _, _ := net.SplitHostPort(cfg.Address); host != "kurrentdb" {
			t.Errorf("MYSAFE_EVENTSTORE_URL names host %s; want the kurrentdb service", cfg.Address)
		}
		if !cfg.DisableTLS || c.Services["kurrentdb"].Environment["KURRENTDB_INSECURE"] != "true" {
			t.Errorf("MYSAFE_EVENTSTORE_URL with TLS %v against KURRENTDB_INSECURE=%q: they must agree",
				!cfg.DisableTLS, c.Services["kurrentdb"].Environment["KURRENTDB_INSECURE"])
		}
	}
	if opts := parseRedisURL(t, "compose MYSAFE_REDIS_URL", env["MYSAFE_REDIS_URL"]); opts != nil {
		if host, _, _ := net.SplitHostPort(opts.Addr); host != "redis" {
			t.Errorf("MYSAFE_REDIS_URL names host %s; want the redis service", opts.Addr)
		}
	}
}

func mustAbs(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// parseEventStoreURL parses a connection string as mysafe's EventStoreDB
// client will.
func parseEventStoreURL(t *testing.T, what, url string) *esdbclient.Configuration {
	t.Helper()
	if url == "" {
		t.Errorf("%s is not set", what)
		return nil
	}
	cfg, err := esdbclient.ParseConnectionString(url)
	if err != nil {
		t.Errorf("%s=%q does not parse: %v", what, url, err)
		return nil
	}
	return cfg
}

// parseRedisURL parses a Redis URL as mysafe serve does.
func parseRedisURL(t *testing.T, what, url string) *redis.Options {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Errorf("%s=%q does not parse: %v", what, url, err)
		return nil
	}
	return opts
}

// --- Kubernetes -------------------------------------------------------------

// object is what every Kubernetes object has, plus a ConfigMap's or a
// Secret's data.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`

	where string
	node  ast.Node
}

type deployment struct {
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				Containers []container `yaml:"containers"`
				Volumes    []volume    `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type container struct {
	Name  string `yaml:"name"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	SecurityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]any `yaml:"requests"`
		Limits   map[string]any `yaml:"limits"`
	} `yaml:"resources"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type volume struct {
	Name      string `yaml:"name"`
	Projected *struct {
		Sources []struct {
			Secret *secretProjection `yaml:"secret"`
		} `yaml:"sources"`
	} `yaml:"projected"`
}

type secretProjection struct {
	Name  string      `yaml:"name"`
	Items []keyToPath `yaml:"items"`
}

type keyToPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

type service struct {
	Spec struct {
		Type     string            `yaml:"type"`
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Port       int `yaml:"port"`
			TargetPort any `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

// kubeObjects reads the manifests kustomization.yaml lists, after checking
// that it lists every manifest in the directory.
func kubeObjects(t *testing.T) []object {
	t.Helper()
	kpath := filepath.Join(kubeDir, kustomizationFile)
	kdocs := yamlDocs(t, kpath)
	if len(kdocs) != 1 {
		t.Fatalf("%s holds %d documents; want 1", kpath, len(kdocs))
	}
	var k struct {
		APIVersion string   `yaml:"apiVersion"`
		Kind       string   `yaml:"kind"`
		Namespace  string   `yaml:"namespace"`
		Resources  []string `yaml:"resources"`
	}
	decodeNode(t, kpath, kdocs[0], &k)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s is %s %s; want kustomize.config.k8s.io/v1beta1 Kustomization", kpath, k.APIVersion, k.Kind)
	}
	if k.Namespace != "" {
		t.Errorf("%s sets namespace %s; the base must fit any namespace", kpath, k.Namespace)
	}
	files, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var manifests []string
	for _, f := range files {
		if filepath.Base(f) != kustomizationFile {
			manifests = append(manifests, filepath.Base(f))
		}
	}
	listed := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(listed, manifests) {
		t.Errorf("%s lists %q; the directory holds %q", kpath, listed, manifests)
	}

	var objs []object
	for _, name := range k.Resources {
		path := filepath.Join(kubeDir, name)
		for i, doc := range yamlDocs(t, path) {
			o := object{where: fmt.Sprintf("%s document %d", path, i+1), node: doc}
			decodeNode(t, o.where, doc, &o)
			objs = append(objs, o)
		}
	}
	return objs
}

// find returns the one object of a kind and name ("" for any name).
func find(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.Kind == kind && (name == "" || o.Metadata.Name == name) {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %s objects named %q; want 1", len(found), kind, name)
	}
	return found[0]
}

func TestKubernetes(t *testing.T) {
	objs := kubeObjects(t)
	img := readImage(t)

	for _, o := range objs {
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Errorf("%s: apiVersion %q, kind %q, metadata.name %q: want all three", o.where, o.APIVersion, o.Kind, o.Metadata.Name)
		}
		if o.Metadata.Namespace != "" {
			t.Errorf("%s: namespace %s; the manifests must fit any namespace", o.where, o.Metadata.Namespace)
		}
	}

	cm := find(t, objs, "ConfigMap", "")
	host, port, err := net.SplitHostPort(cm.Data["MYSAFE_ADDR"])
	if err != nil || host != "0.0.0.0" {
		t.Errorf("ConfigMap MYSAFE_ADDR=%q; want 0.0.0.0:PORT, reachable by probes and the Service", cm.Data["MYSAFE_ADDR"])
	}
	parseEventStoreURL(t, "ConfigMap MYSAFE_EVENTSTORE_URL", cm.Data["MYSAFE_EVENTSTORE_URL"])
	parseRedisURL(t, "ConfigMap MYSAFE_REDIS_URL", cm.Data["MYSAFE_REDIS_URL"])
	if cm.Data["MYSAFE_REDIS_PREFIX"] == "" {
		t.Error("ConfigMap has no MYSAFE_REDIS_PREFIX")
	}

	depObj := find(t, objs, "Deployment", "")
	var dep deployment
	decodeNode(t, depObj.where, depObj.node, &dep)
	pod := dep.Spec.Template
	for k, v := range dep.Spec.Selector.MatchLabels {
		if pod.Metadata.Labels[k] != v {
			t.Errorf("Deployment selects %s=%s, which its pods do not carry", k, v)
		}
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("Deployment has %d containers; want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	// Container port, probes and the Service must agree with MYSAFE_ADDR.
	portNames := map[string]string{}
	for _, p := range c.Ports {
		portNames[p.Name] = strconv.Itoa(p.ContainerPort)
	}
	if portNames["http"] != port {
		t.Errorf("container port http is %q; want %s, MYSAFE_ADDR's port", portNames["http"], port)
	}
	resolve := func(p any) string {
		if s, ok := p.(string); ok && portNames[s] != "" {
			return portNames[s]
		}
		return fmt.Sprint(p)
	}
	for _, pr := range []struct {
		name, path string
		probe      *probe
	}{{"readinessProbe", "/readyz", c.ReadinessProbe}, {"livenessProbe", "/healthz", c.LivenessProbe}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("no %s httpGet", pr.name)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path || resolve(pr.probe.HTTPGet.Port) != port {
			t.Errorf("%s GET %s on port %v; want %s on %s", pr.name, pr.probe.HTTPGet.Path, pr.probe.HTTPGet.Port, pr.path, port)
		}
	}

	sc := c.SecurityContext
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("container securityContext lacks runAsNonRoot: true")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("container securityContext lacks readOnlyRootFilesystem: true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("container securityContext lacks allowPrivilegeEscalation: false")
	}
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("container drops capabilities %q; want [ALL]", sc.Capabilities.Drop)
	}
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == nil || c.Resources.Limits[r] == nil {
			t.Errorf("container resources: %s request %v, limit %v; want both", r, c.Resources.Requests[r], c.Resources.Limits[r])
		}
	}

	// envFrom must name objects of this kustomization; the master key must
	// come from a Secret.
	masterKeyFromSecret := false
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			find(t, objs, "ConfigMap", ef.ConfigMapRef.Name)
		case ef.SecretRef != nil:
			s := find(t, objs, "Secret", ef.SecretRef.Name)
			if _, ok := s.StringData["MYSAFE_MASTER_KEY"]; ok {
				masterKeyFromSecret = true
			}
			if _, ok := s.Data["MYSAFE_MASTER_KEY"]; ok {
				masterKeyFromSecret = true
			}
		}
	}
	if !masterKeyFromSecret {
		t.Error("no envFrom Secret holds MYSAFE_MASTER_KEY")
	}

	// The signing key: a Secret key projected as token-signing.key into
	// the data dir, which must be the one the image uses.
	dataDir := img.dataDir()
	for _, e := range c.Env {
		if e.Name == "MYSAFE_DATA_DIR" {
			dataDir = e.Value
		}
	}
	if dataDir != img.dataDir() {
		t.Errorf("Deployment MYSAFE_DATA_DIR=%s; want the image's %s", dataDir, img.dataDir())
	}
	var dataVolume string
	for _, m := range c.VolumeMounts {
		if m.MountPath == dataDir {
			dataVolume = m.Name
		}
	}
	var signingSecret, signingKeyData string
	for _, v := range pod.Spec.Volumes {
		if v.Name != dataVolume || v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.Secret == nil {
				continue
			}
			for _, it := range src.Secret.Items {
				if it.Path != signingKeyFile {
					continue
				}
				s := find(t, objs, "Secret", src.Secret.Name)
				data, ok := s.Data[it.Key]
				if !ok {
					t.Errorf("Secret %s has no data key %s", s.Metadata.Name, it.Key)
				}
				signingSecret, signingKeyData = s.Metadata.Name, data
			}
		}
	}
	if signingSecret == "" {
		t.Errorf("no projected Secret puts %s into the data dir %s", signingKeyFile, dataDir)
	}

	// The committed placeholders must never work as keys: a cluster applied
	// without real ones has mysafe refuse to start.
	for _, o := range objs {
		if v, ok := o.StringData["MYSAFE_MASTER_KEY"]; ok {
			if k, err := base64.StdEncoding.DecodeString(v); err == nil && len(k) == 32 {
				t.Errorf("%s: MYSAFE_MASTER_KEY is a usable key; commit a placeholder", o.where)
			}
		}
	}
	if signingSecret != "" {
		if raw, err := base64.StdEncoding.DecodeString(signingKeyData); err != nil {
			t.Errorf("Secret %s: %s is not base64: %v", signingSecret, signingKeyFile, err)
		} else if len(raw) == 32 {
			t.Errorf("Secret %s: %s is a usable key; commit a placeholder", signingSecret, signingKeyFile)
		}
	}

	svcObj := find(t, objs, "Service", "")
	var svc service
	decodeNode(t, svcObj.where, svcObj.node, &svc)
	if svc.Spec.Type != "ClusterIP" {
		t.Errorf("Service type %q; want ClusterIP", svc.Spec.Type)
	}
	for k, v := range svc.Spec.Selector {
		if pod.Metadata.Labels[k] != v {
			t.Errorf("Service selects %s=%s, which the pods do not carry", k, v)
		}
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 || resolve(svc.Spec.Ports[0].TargetPort) != port {
		t.Errorf("Service ports %+v; want 80 to the container's %s", svc.Spec.Ports, port)
	}
}
