package service

// Ejected reports whether the instance at addr is ejected now (for tests).
func (c *Client) Ejected(addr string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	in := c.instances[addr]
	return in != nil && in.health.ejected()
}
