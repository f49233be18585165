package podpolicy

import (
	"regexp"
	"strings"

	"github.com/veil-runtime/veil/guest-agent/policy"
)

// Value expressions of the variables Kubernetes chooses at run time.
const (
	ipv4Expr  = `[0-9]{1,3}(?:\.[0-9]{1,3}){3}`
	ipv6Expr  = `[0-9a-fA-F:.]*:[0-9a-fA-F:.]*`
	ipExpr    = `(?:` + ipv4Expr + `|` + ipv6Expr + `)`
	portExpr  = `[0-9]{1,5}`
	protoExpr = `(?:tcp|udp|sctp)`
	urlExpr   = protoExpr + `://(?:` + ipv4Expr + `|\[` + ipv6Expr + `\]):` + portExpr
	// anyValue admits any value (a secret or configMap key the generator
	// was not given, an annotation through the downward API).
	anyValue = `(?s)^.*$`
	// dnsLabel is a pod name or host name Kubernetes generates.
	dnsLabel = `[a-z0-9](?:[-a-z0-9.]{0,61}[a-z0-9])?`
)

// servicePrefix is a service's name as kubelet turns it into a variable
// prefix (upper case, '-' as '_'), written so that no name it admits
// starts with LD_: a service link variable can never be LD_PRELOAD,
// LD_LIBRARY_PATH or LD_AUDIT, whatever services the host invents.
// Every pattern below also requires a suffix (_SERVICE_HOST, _PORT...),
// so PATH, HOME or HOSTNAME never match either.
const servicePrefix = `(?:[A-KM-Z][A-Z0-9_]*|L(?:[A-CE-Z0-9_][A-Z0-9_]*)?|LD[A-Z0-9][A-Z0-9_]*)`

// kubernetesPrefix is the API server's service ("kubernetes" in the
// default namespace), whose variables every container gets even with
// enableServiceLinks: false.
const kubernetesPrefix = `KUBERNETES`

// serviceEnvPatterns are the variables kubelet writes for each service
// (pkg/kubelet/envvars): NAME_SERVICE_HOST=IP, NAME_SERVICE_PORT[_PORTNAME]=PORT,
// NAME_PORT=tcp://IP:PORT, NAME_PORT_<n>_<PROTO>=tcp://IP:PORT and its
// _PROTO, _PORT and _ADDR parts.
func serviceEnvPatterns(prefix string) []policy.EnvPattern {
	portVar := `_PORT_` + portExpr + `_(?:TCP|UDP|SCTP)`
	return []policy.EnvPattern{
		{Name: `^` + prefix + `_SERVICE_HOST$`, Value: `^` + ipExpr + `$`},
		{Name: `^` + prefix + `_SERVICE_PORT(?:_[A-Z0-9_]+)?$`, Value: `^` + portExpr + `$`},
		{Name: `^` + prefix + `_PORT$`, Value: `^` + urlExpr + `$`},
		{Name: `^` + prefix + portVar + `$`, Value: `^` + urlExpr + `$`},
		{Name: `^` + prefix + portVar + `_PROTO$`, Value: `^` + protoExpr + `$`},
		{Name: `^` + prefix + portVar + `_PORT$`, Value: `^` + portExpr + `$`},
		{Name: `^` + prefix + portVar + `_ADDR$`, Value: `^` + ipExpr + `$`},
	}
}

// mayBeServiceVar reports whether kubelet may define name from a service
// (with prefix servicePrefix or kubernetesPrefix).
func mayBeServiceVar(name string, links bool) bool {
	prefix := kubernetesPrefix
	if links {
		prefix = servicePrefix
	}
	for _, p := range serviceEnvPatterns(prefix) {
		if regexp.MustCompile(p.Name).MatchString(name) {
			return true
		}
	}
	return false
}

// sensitiveEnv are variables a pattern for names the generator cannot
// know (envFrom of a ConfigMap it was not given) must never admit: they
// change what the dynamic loader, the shell or the runtime load.
var sensitiveEnv = []string{
	"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "LD_BIND_NOW", "LD_DEBUG", "LD_PROFILE",
	"PATH", "HOME", "HOSTNAME", "SHELL", "ENV", "BASH_ENV", "IFS", "GCONV_PATH", "LOCPATH",
	"NLSPATH", "MALLOC_CHECK_", "TMPDIR", "PYTHONPATH", "PYTHONSTARTUP", "PERL5LIB", "PERL5OPT",
	"RUBYOPT", "RUBYLIB", "NODE_OPTIONS", "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS",
	"JDK_JAVA_OPTIONS", "CLASSPATH", "GODEBUG", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY",
	"HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "NO_PROXY",
}

// admitsSensitive reports whether a name pattern admits one of
// sensitiveEnv or anything starting with LD_.
func admitsSensitive(nameExpr string) bool {
	re := regexp.MustCompile(nameExpr)
	for _, n := range sensitiveEnv {
		if re.MatchString(n) {
			return true
		}
	}
	return re.MatchString("LD_X") || re.MatchString("LD_")
}

// exactName is a pattern admitting exactly name.
func exactName(name string) string { return "^" + regexp.QuoteMeta(name) + "$" }

// envVal is one variable's value as the generator knows it: exact, or
// only a pattern.
type envVal struct {
	value   string
	pattern string // a value regex when the value is not known
}

func (v envVal) known() bool { return v.pattern == "" }

// envList is an ordered list of variables where a later definition of a
// name replaces the earlier one in place (containerd's oci.WithEnv).
type envList struct {
	names []string
	vals  map[string]envVal
}

func (l *envList) set(name string, v envVal) {
	if l.vals == nil {
		l.vals = map[string]envVal{}
	}
	if _, ok := l.vals[name]; !ok {
		l.names = append(l.names, name)
	}
	l.vals[name] = v
}

func (l *envList) get(name string) (envVal, bool) {
	v, ok := l.vals[name]
	return v, ok
}

// expand resolves $(VAR) references the way kubelet does (its fork of
// os.Expand: "$$" is a literal "$", "$(NAME)" the variable's value, an
// undefined NAME stays "$(NAME)"). lookup says whether a name is defined
// and whether its value is known; known is false when a referenced
// variable's value is only a pattern.
func expand(in string, lookup func(name string) (value string, defined, known bool)) (out string, known bool) {
	var b strings.Builder
	known = true
	for i := 0; i < len(in); i++ {
		if in[i] != '$' || i+1 == len(in) {
			b.WriteByte(in[i])
			continue
		}
		switch next := in[i+1]; next {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(in[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := in[i+2 : i+2+end]
			v, defined, k := lookup(name)
			switch {
			case !defined:
				b.WriteString("$(" + name + ")")
			case !k:
				known = false
			default:
				b.WriteString(v)
			}
			i += 2 + end
		default:
			b.WriteByte('$')
			b.WriteByte(next)
			i++
		}
	}
	return b.String(), known
}
