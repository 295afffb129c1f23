package egress_test

import (
	"encoding/json"
	"log"
	"net"
	"os"

	"codeexec/internal/egress"
)

// One execution's proxy: the operator's policy narrowed by the request,
// served on a listener that the sandbox can reach (in production, one
// created inside the sandbox's network namespace), with HTTP_PROXY and
// HTTPS_PROXY pointing at it. After the execution, Close, then Log goes
// into the result.
func Example() {
	operator := egress.Policy{
		Allow: []string{"api.example.com", "*.githubusercontent.com"},
		Headers: map[string]map[string]string{
			"api.example.com": {"Authorization": "Bearer from-the-host"},
		},
	}
	if err := operator.Validate(); err != nil {
		log.Fatal(err)
	}
	policy, err := operator.Narrow([]string{"raw.githubusercontent.com"})
	if err != nil {
		log.Fatal(err) // the request asked for more than the operator allows
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	p := egress.New(policy, egress.Options{})
	go p.Serve(ln)
	// ... run the program with HTTP_PROXY=http://<ln.Addr()> ...
	p.Close()

	json.NewEncoder(os.Stdout).Encode(p.Log())
}
