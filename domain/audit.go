package domain

import "slices"

// auditEvents names, for each event type the Audit screen lists, the event
// it shows there. It is the one rule for what is audit-relevant: the audit
// report, its filters and the SIEM feed all read it. A new event type that
// auditors must see gets a line here.
var auditEvents = map[string]string{
	SecretCreated{}.EventType():          "New",
	SecretUpdated{}.EventType():          "Change",
	SecretRevealed{}.EventType():         "View",
	SecretCopied{}.EventType():           "Copy",
	SecretDisabled{}.EventType():         "Disabling",
	SecretEnabled{}.EventType():          "Activation",
	ShareGranted{}.EventType():           "Sharing",
	ShareRevoked{}.EventType():           "Unsharing",
	SharePermissionChanged{}.EventType(): "Permission change",
}

// AuditEvent is the name the Audit screen shows for an event type; ok is
// false for types that are not audit-relevant (key and user records).
func AuditEvent(eventType string) (name string, ok bool) {
	name, ok = auditEvents[eventType]
	return name, ok
}

// AuditEventNames lists the Audit screen's event names, sorted.
func AuditEventNames() []string {
	var names []string
	for _, n := range auditEvents {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// AuditEventTypes lists the event types shown under an Audit screen event
// name, sorted; none for an unknown name.
func AuditEventTypes(name string) []string {
	var types []string
	for t, n := range auditEvents {
		if n == name {
			types = append(types, t)
		}
	}
	slices.Sort(types)
	return types
}

// AuditEventTypeNames lists every audit-relevant event type, sorted.
func AuditEventTypeNames() []string {
	var types []string
	for t := range auditEvents {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}
