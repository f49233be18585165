package podpolicy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Workload is one pod template of a manifest: a Pod, or the template of a
// Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob.
type Workload struct {
	// Kind and Name are the manifest object's ("Deployment", "web").
	Kind, Name string
	// Namespace is the object's namespace ("" when the manifest leaves it
	// to kubectl).
	Namespace string
	// Meta is the pod's (or the template's) metadata: its annotations
	// carry the io.veil.policy/ settings.
	Meta metav1.ObjectMeta
	// Spec is the pod spec.
	Spec corev1.PodSpec
}

// ID is "kind/name" in lower case ("deployment/web").
func (w *Workload) ID() string { return strings.ToLower(w.Kind) + "/" + w.Name }

// Objects are the parsed objects of one or more manifests.
type Objects struct {
	Workloads  []Workload
	ConfigMaps []corev1.ConfigMap
	Secrets    []corev1.Secret
}

// Decode reads a manifest (YAML or JSON, several documents separated by
// "---", kind List expanded) into objects; where names it in errors.
// Fields the API does not know are an error: a misspelt "comand" would
// otherwise bind the image's entrypoint instead. Kinds other than the
// workloads, ConfigMap and Secret (Services, RBAC, ...) are skipped.
func Decode(where string, data []byte) (*Objects, error) {
	objs := &Objects{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s document %d: %w", where, n, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		if err := objs.add(fmt.Sprintf("%s document %d", where, n), doc); err != nil {
			return nil, err
		}
	}
}

// Merge appends other's objects to o.
func (o *Objects) Merge(other *Objects) {
	o.Workloads = append(o.Workloads, other.Workloads...)
	o.ConfigMaps = append(o.ConfigMaps, other.ConfigMaps...)
	o.Secrets = append(o.Secrets, other.Secrets...)
}

func (o *Objects) add(where string, doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return fmt.Errorf("parsing %s: %w", where, err)
	}
	if tm.Kind == "" {
		// Blank or comment-only documents have no kind either.
		var anything map[string]any
		if err := yaml.Unmarshal(doc, &anything); err == nil && len(anything) == 0 {
			return nil
		}
		return fmt.Errorf("%s: no kind", where)
	}
	strict := func(v any) error {
		if err := yaml.UnmarshalStrict(doc, v); err != nil {
			return fmt.Errorf("parsing %s (%s): %w", where, tm.Kind, err)
		}
		return nil
	}
	switch tm.Kind {
	case "List":
		var l struct {
			Items []rawJSON `json:"items"`
		}
		if err := yaml.Unmarshal(doc, &l); err != nil {
			return fmt.Errorf("parsing %s (List): %w", where, err)
		}
		for i, item := range l.Items {
			if err := o.add(fmt.Sprintf("%s item %d", where, i), item); err != nil {
				return err
			}
		}
	case "Pod":
		var p corev1.Pod
		if err := strict(&p); err != nil {
			return err
		}
		o.Workloads = append(o.Workloads, Workload{Kind: tm.Kind, Name: p.Name, Namespace: p.Namespace, Meta: p.ObjectMeta, Spec: p.Spec})
	case "Deployment":
		var d appsv1.Deployment
		if err := strict(&d); err != nil {
			return err
		}
		o.addTemplate(tm.Kind, d.ObjectMeta, d.Spec.Template)
	case "StatefulSet":
		var s appsv1.StatefulSet
		if err := strict(&s); err != nil {
			return err
		}
		o.addTemplate(tm.Kind, s.ObjectMeta, s.Spec.Template)
	case "DaemonSet":
		var s appsv1.DaemonSet
		if err := strict(&s); err != nil {
			return err
		}
		o.addTemplate(tm.Kind, s.ObjectMeta, s.Spec.Template)
	case "ReplicaSet":
		var s appsv1.ReplicaSet
		if err := strict(&s); err != nil {
			return err
		}
		o.addTemplate(tm.Kind, s.ObjectMeta, s.Spec.Template)
	case "Job":
		var j batchv1.Job
		if err := strict(&j); err != nil {
			return err
		}
		o.addTemplate(tm.Kind, j.ObjectMeta, j.Spec.Template)
	case "CronJob":
		var c batchv1.CronJob
		if err := strict(&c); err != nil {
			return err
		}
		o.addTemplate(tm.Kind, c.ObjectMeta, c.Spec.JobTemplate.Spec.Template)
	case "ConfigMap":
		var c corev1.ConfigMap
		if err := strict(&c); err != nil {
			return err
		}
		o.ConfigMaps = append(o.ConfigMaps, c)
	case "Secret":
		var s corev1.Secret
		if err := strict(&s); err != nil {
			return err
		}
		o.Secrets = append(o.Secrets, s)
	}
	return nil
}

// rawJSON is one item of a List, decoded later by its kind.
type rawJSON []byte

func (r *rawJSON) UnmarshalJSON(b []byte) error { *r = append((*r)[:0], b...); return nil }

func (o *Objects) addTemplate(kind string, meta metav1.ObjectMeta, t corev1.PodTemplateSpec) {
	o.Workloads = append(o.Workloads, Workload{Kind: kind, Name: meta.Name, Namespace: meta.Namespace, Meta: t.ObjectMeta, Spec: t.Spec})
}

// configMap finds a ConfigMap by namespace and name (an empty namespace
// matches any: manifests often leave it to kubectl).
func (o *Objects) configMap(ns, name string) (map[string]string, bool) {
	for _, c := range o.ConfigMaps {
		if c.Name == name && sameNamespace(c.Namespace, ns) {
			data := map[string]string{}
			for k, v := range c.Data {
				data[k] = v
			}
			for k, v := range c.BinaryData {
				data[k] = string(v)
			}
			return data, true
		}
	}
	return nil, false
}

// secret finds a Secret by namespace and name.
func (o *Objects) secret(ns, name string) (map[string]string, bool) {
	for _, s := range o.Secrets {
		if s.Name == name && sameNamespace(s.Namespace, ns) {
			data := map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
			for k, v := range s.StringData {
				data[k] = v
			}
			return data, true
		}
	}
	return nil, false
}

func sameNamespace(a, b string) bool { return a == "" || b == "" || a == b }
