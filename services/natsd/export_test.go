package natsd

// JetStreamEnabled reports whether the account has JetStream on this server.
func (s *Server) JetStreamEnabled(account string) bool {
	acc, err := s.srv.LookupAccount(account)
	return err == nil && acc.JetStreamEnabled()
}
