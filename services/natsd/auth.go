package natsd

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/otawatch/otawatch/events"
)

// The embedded server keeps two accounts apart. Services, the streams and
// the JetStream API live in ServicesAccount; every MQTT client lives in
// DevicesAccount, which reaches nothing but the device topic space. Only the
// device subjects (events.DeviceTopicSubjects) cross, exported by the
// devices account and imported by the services account, so no MQTT topic
// maps onto shadow.>, rollout.>, alert.>, notify.>, audit.>, otawatch.>, $JS.>, $KV.>
// or _INBOX.> of the log's account. The services account is named as in
// deploy/nats/cluster.conf.
const (
	ServicesAccount = "OTAWATCH"
	DevicesAccount  = "DEVICES"
)

// MQTT identities of the services. A device id may not take these names.
const (
	// UserBridge reads every device's reports and presence (bridge).
	UserBridge = "otawatch-bridge"
	// UserRollout publishes desired state to every device (rollout).
	UserRollout = "otawatch-rollout"
)

// DeviceChecker says whether a device's credentials are good. The device
// registry (services/internal/identity) implements it.
type DeviceChecker interface {
	// Check reports whether password is the device's.
	Check(id, password string) bool
	// Has reports whether the device is registered (a device that shows a
	// client certificate must still be registered).
	Has(id string) bool
}

// Auth decides who may connect to the embedded server and what each may do.
// The zero Auth refuses everyone.
type Auth struct {
	// Passwords of the built-in identities: events.IdentityServices and
	// events.IdentityCLI on the NATS port, UserBridge and UserRollout on
	// the MQTT listener. An identity without a password cannot connect.
	Passwords map[string]string
	// Devices checks device credentials on the MQTT listener; nil admits
	// no device.
	Devices DeviceChecker
	// AnonymousNATS admits clients without credentials on the NATS port as
	// events.IdentityAnonymous, with the services' permissions. Only for a
	// loopback listener (Config.Validate refuses it elsewhere).
	AnonymousNATS bool
	// AnonymousMQTT admits MQTT clients without credentials, with the
	// whole devices account (any device's reports, presence and desired
	// state; nothing of the log). Only for a loopback listener.
	AnonymousMQTT bool
}

// authenticator is the server's CustomClientAuthentication: it checks a
// connecting client against Auth and binds it to its account with the
// identity's permissions.
type authenticator struct {
	auth     Auth
	log      *slog.Logger
	services *server.Account
	devices  *server.Account
	// hold holds devices until reports have a subscriber (hold.go); nil
	// holds nothing.
	hold *deviceHold
}

// Check implements server.Authentication.
func (a *authenticator) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	mqtt, err := isMQTT(c)
	if err != nil {
		// Fail closed: without knowing the listener no account is right.
		a.log.Error("refusing a client: cannot tell its listener", "err", err)
		return false
	}
	opts := c.GetOpts()
	user, err := a.identify(c, opts, mqtt)
	if err != nil {
		a.log.Warn("connection refused", "listener", listenerName(mqtt), "user", opts.Username,
			"remote", remote(c), "reason", err.Error())
		return false
	}
	if mqtt && user.Username != UserBridge && user.Username != UserRollout {
		if err := a.hold.wait(); err != nil {
			a.log.Debug("device connection refused", "user", opts.Username, "remote", remote(c), "reason", err.Error())
			return false
		}
	}
	c.RegisterUser(user)
	return true
}

func (a *authenticator) identify(c server.ClientAuthentication, opts *server.ClientOpts, mqtt bool) (*server.User, error) {
	name, password := opts.Username, opts.Password
	if opts.Token != "" && password == "" {
		password = opts.Token
	}
	if !mqtt {
		switch {
		case name == "" && password == "":
			if !a.auth.AnonymousNATS {
				return nil, errors.New("no credentials")
			}
			return a.servicesUser(events.IdentityAnonymous), nil
		case name == events.IdentityServices || name == events.IdentityCLI:
			if !a.passwordOK(name, password) {
				return nil, errors.New("wrong password")
			}
			return a.servicesUser(name), nil
		default:
			return nil, fmt.Errorf("unknown user %q on the NATS port", name)
		}
	}
	if id, ok, err := certDevice(c); err != nil {
		return nil, err
	} else if ok {
		// A verified client certificate names the device; a username, if
		// any, must agree with it.
		if name != "" && name != id {
			return nil, fmt.Errorf("username %q does not match the certificate's device %q", name, id)
		}
		if a.auth.Devices == nil || !a.auth.Devices.Has(id) {
			return nil, fmt.Errorf("certificate device %q is not registered", id)
		}
		return deviceUser(id, a.devices), nil
	}
	switch {
	case name == "" && password == "":
		if !a.auth.AnonymousMQTT {
			return nil, errors.New("no credentials")
		}
		// The devices account holds nothing but device topics, so an
		// anonymous client gets all of it (nil permissions), wildcards
		// over other device topics too.
		return &server.User{Username: events.IdentityAnonymous, Account: a.devices}, nil
	case name == UserBridge || name == UserRollout:
		if !a.passwordOK(name, password) {
			return nil, errors.New("wrong password")
		}
		return serviceMQTTUser(name, a.devices), nil
	}
	if err := events.ValidateID("device id", name); err != nil {
		return nil, err
	}
	if a.auth.Devices == nil || !a.auth.Devices.Check(name, password) {
		return nil, errors.New("unknown device or wrong password")
	}
	return deviceUser(name, a.devices), nil
}

func (a *authenticator) passwordOK(name, password string) bool {
	want, ok := a.auth.Passwords[name]
	return ok && want != "" && subtle.ConstantTimeCompare([]byte(want), []byte(password)) == 1
}

// servicesUser is a NATS-port identity in the services account. It may do
// everything the services do but delete or purge a stream or a message,
// and may send rollout commands only under its own name
// (events.RolloutCommandSubject), so the rollout service knows who asked;
// the CLI may not write audit checkpoints.
func (a *authenticator) servicesUser(identity string) *server.User {
	deny := []string{
		"$JS.API.STREAM.DELETE.>",
		"$JS.API.STREAM.PURGE.>",
		"$JS.API.STREAM.MSG.DELETE.>",
	}
	for _, other := range []string{events.IdentityServices, events.IdentityCLI, events.IdentityAnonymous} {
		if other != identity {
			deny = append(deny, events.RolloutCommandPrefix+".*."+other)
		}
	}
	if identity == events.IdentityCLI {
		// Checkpoints vouch for the log, and alerts and the rule sets in
		// force (which replay alerting trusts) are the alerting
		// service's: only the services' identity writes them.
		deny = append(deny, events.SubjectAuditCheckpoint+".>", events.SubjectAlert+".>")
	}
	return &server.User{
		Username: identity,
		Account:  a.services,
		Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Deny: deny},
		},
	}
}

// deviceUser may publish only its own reports and presence and subscribe
// only to its own desired state, whatever type it claims.
func deviceUser(id string, acc *server.Account) *server.User {
	return &server.User{
		Username: id,
		Account:  acc,
		Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{events.DeviceTopicSubject("*", id, events.TopicReport), events.DeviceTopicSubject("*", id, events.TopicPresence)}},
			Subscribe: &server.SubjectPermission{Allow: []string{events.DeviceTopicSubject("*", id, events.TopicDelta)}},
		},
	}
}

// serviceMQTTUser: the bridge reads every report and presence and
// publishes nothing; the rollout service publishes (and reads back) desired
// state and nothing else.
func serviceMQTTUser(name string, acc *server.Account) *server.User {
	u := &server.User{Username: name, Account: acc}
	all := func(topic string) string { return events.DeviceTopicSubject("*", "*", topic) }
	switch name {
	case UserBridge:
		u.Permissions = &server.Permissions{
			Publish:   &server.SubjectPermission{Deny: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{all(events.TopicReport), all(events.TopicPresence)}},
		}
	case UserRollout:
		u.Permissions = &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{all(events.TopicDelta)}},
			Subscribe: &server.SubjectPermission{Allow: []string{all(events.TopicDelta)}},
		}
	}
	return u
}

// certDevice returns the device a verified client certificate names (its
// common name), when the client showed one on a TLS listener that checks
// client certificates.
func certDevice(c server.ClientAuthentication) (string, bool, error) {
	st := c.GetTLSConnectionState()
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return "", false, nil
	}
	cert := st.VerifiedChains[0][0]
	id := cert.Subject.CommonName
	if err := events.ValidateID("certificate common name", id); err != nil {
		return "", false, err
	}
	if isServiceName(id) {
		return "", false, fmt.Errorf("certificate names the service identity %q", id)
	}
	return id, true, nil
}

func isServiceName(name string) bool {
	return name == UserBridge || name == UserRollout || name == events.IdentityServices ||
		name == events.IdentityCLI || name == events.IdentityAnonymous
}

// isMQTT tells an MQTT client from a NATS one. The server's client type is
// not part of ClientAuthentication, so it is read from the client's
// unexported mqtt field (set only for MQTT connections). If a server
// upgrade renames it, this fails and every client is refused (the log
// says why), so every test in auth_test.go fails rather than a device
// being taken for a service.
func isMQTT(c server.ClientAuthentication) (bool, error) {
	v := reflect.ValueOf(c)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return false, fmt.Errorf("client is a %T, not the server's client", c)
	}
	f := v.Elem().FieldByName("mqtt")
	if !f.IsValid() || f.Kind() != reflect.Pointer {
		return false, errors.New("the server's client has no mqtt field (nats-server changed?)")
	}
	return !f.IsNil(), nil
}

func listenerName(mqtt bool) string {
	if mqtt {
		return "mqtt"
	}
	return "nats"
}

func remote(c server.ClientAuthentication) string {
	if addr := c.RemoteAddress(); addr != nil {
		return addr.String()
	}
	return "in-process"
}

// accountsConfig declares the two accounts and the device subjects that
// cross from devices to services. The services' account has JetStream; the
// devices' account has it only with the MQTT listener on (MQTT keeps
// sessions and retained messages in its own streams): without it, a
// command that only reads the log does not load (and at its end flush) a
// store of thousands of device sessions, which took 3 s for 300 devices.
func accountsConfig(mqtt bool) string {
	devicesJS := "disabled"
	if mqtt {
		devicesJS = "enabled"
	}
	var exports, imports []string
	for _, s := range events.DeviceTopicSubjects() {
		exports = append(exports, fmt.Sprintf("{stream: %q}", s))
		imports = append(imports, fmt.Sprintf("{stream: {account: %s, subject: %q}}", DevicesAccount, s))
	}
	return fmt.Sprintf(`accounts {
  %s: { jetstream: enabled, imports: [%s] }
  %s: { jetstream: %s, exports: [%s] }
}`, ServicesAccount, strings.Join(imports, ", "), DevicesAccount, devicesJS, strings.Join(exports, ", "))
}
