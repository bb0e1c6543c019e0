-- Returns GET KEYS[1]; used by the plumbing's own tests and as a template.
return redis.call('GET', KEYS[1])
