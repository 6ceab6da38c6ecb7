package notify

import (
	"strconv"

	"github.com/otawatch/otawatch/events"
)

// Label names every alert has (Labels), besides its rule's own labels.
const (
	LabelSeverity   = "severity"
	LabelRule       = "rule"
	LabelJob        = "job"
	LabelWave       = "wave"
	LabelDeviceType = "device_type"
	LabelDevice     = "device"
)

// Labels are what routes, silences and inhibitions match an alert on: its
// rule's labels, then severity, rule, job, wave, device_type and device
// (these win over a rule label of the same name; an empty one is absent).
func Labels(a events.AlertData) map[string]string {
	l := make(map[string]string, len(a.Labels)+6)
	for k, v := range a.Labels {
		l[k] = v
	}
	set := func(k, v string) {
		if v != "" {
			l[k] = v
		} else {
			delete(l, k)
		}
	}
	set(LabelSeverity, a.Severity)
	set(LabelRule, a.RuleID)
	set(LabelJob, a.JobID)
	if a.Wave > 0 {
		set(LabelWave, strconv.Itoa(a.Wave))
	} else {
		delete(l, LabelWave)
	}
	set(LabelDeviceType, a.TypeID)
	set(LabelDevice, a.DeviceID)
	return l
}
