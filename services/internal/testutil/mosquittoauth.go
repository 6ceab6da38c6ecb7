package testutil

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/otawatch/otawatch/services/internal/identity"
)

// The services' MQTT users on a locked-down test broker, as the shipped ACL
// (deploy/mosquitto/acl) names them, with the passwords StartMosquittoAuth
// gives them unless told otherwise.
const (
	BridgeUser      = "otawatch-bridge"
	BridgePassword  = "bridge-test-password"
	RolloutUser     = "otawatch-rollout"
	RolloutPassword = "rollout-test-password"
)

// MosquittoAuth is who may use a locked-down test broker.
type MosquittoAuth struct {
	// Devices are registered in a device registry (bcrypt cost 4), from
	// which identity.WriteMosquittoPasswordFile writes the broker's
	// password_file, as "otawatch devices" does.
	Devices []identity.Credential
	// Services are the services' users; nil is BridgeUser and RolloutUser
	// with BridgePassword and RolloutPassword.
	Services []identity.Credential
	// ACLFile is the broker's acl_file; empty is the shipped
	// deploy/mosquitto/acl.
	ACLFile string
}

// MosquittoAuthConfig is what a locked-down test broker has in place of
// MosquittoConfig's "allow_anonymous true": the authentication settings of
// deploy/mosquitto/mosquitto.conf, with the test's files.
func MosquittoAuthConfig(passwordFile, aclFile string) string {
	return fmt.Sprintf("allow_anonymous false\npassword_file %s\nacl_file %s\n", passwordFile, aclFile)
}

// AuthMosquitto is a locked-down broker and the files behind it.
type AuthMosquitto struct {
	*Mosquitto
	// Registry is the device registry; PasswordFile the password_file
	// written from it. After changing the registry, WritePasswords and
	// Reload put the change in force.
	Registry     string
	PasswordFile string
	services     []identity.Credential
}

// StartMosquittoAuth starts Mosquitto as StartMosquitto does, but locked
// down as deploy/mosquitto ships it: no anonymous access, a password_file
// written from a device registry, and an ACL.
func StartMosquittoAuth(t testing.TB, a MosquittoAuth) *AuthMosquitto {
	t.Helper()
	dir := t.TempDir()
	m := &AuthMosquitto{Registry: filepath.Join(dir, "devices.json"), PasswordFile: filepath.Join(dir, "passwd"), services: a.Services}
	if m.services == nil {
		m.services = []identity.Credential{{ID: BridgeUser, Password: BridgePassword}, {ID: RolloutUser, Password: RolloutPassword}}
	}
	if len(a.Devices) > 0 {
		if _, err := identity.ImportCredentials(m.Registry, a.Devices, identity.MinCost, nil); err != nil {
			t.Fatalf("register test devices: %v", err)
		}
	}
	m.WritePasswords(t)
	acl := a.ACLFile
	if acl == "" {
		acl = ShippedACL()
	}
	m.Mosquitto = startMosquitto(t, MosquittoAuthConfig(m.PasswordFile, acl))
	return m
}

// WritePasswords rewrites the password_file from the registry.
func (m *AuthMosquitto) WritePasswords(t testing.TB) {
	t.Helper()
	if err := identity.WriteMosquittoPasswordFile(m.Registry, m.PasswordFile, m.services...); err != nil {
		t.Fatal(err)
	}
}

// ShippedACL is the path of deploy/mosquitto/acl in this source tree.
func ShippedACL() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "mosquitto", "acl")
}
