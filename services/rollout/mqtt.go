package rollout

import (
	"errors"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/services/internal/conf"
)

func (s *Service) newMQTT() mqtt.Client {
	id := s.cfg.ClientID
	if id == "" {
		id = "otawatch-rollout-" + s.instance
	}
	o := mqtt.NewClientOptions().AddBroker(s.cfg.Broker).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(10 * time.Second).
		SetOrderMatters(false).SetKeepAlive(30 * time.Second).
		SetOnConnectHandler(func(mqtt.Client) {
			s.deps.Health.Set("rollout_mqtt", nil)
			s.log.Info("mqtt connected", "broker", s.cfg.Broker)
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			s.deps.Health.Set("rollout_mqtt", fmt.Errorf("mqtt connection lost: %w", err))
			s.log.Warn("mqtt connection lost", "broker", s.cfg.Broker, "err", err)
		})
	if tc, err := s.cfg.TLS.Config(); err != nil {
		s.log.Error("mqtt tls", "err", err) // Validate reported it already
	} else if tc != nil {
		o.SetTLSConfig(tc)
	}
	if s.cfg.Username != "" {
		o.SetUsername(s.cfg.Username)
	}
	if s.cfg.PasswordFile != "" {
		if pw, err := conf.ReadSecret(s.cfg.PasswordFile); err != nil {
			s.log.Error("read mqtt password", "err", err)
		} else {
			o.SetPassword(pw)
		}
	}
	s.deps.Health.Set("rollout_mqtt", errors.New("connecting to "+s.cfg.Broker))
	return mqtt.NewClient(o)
}
