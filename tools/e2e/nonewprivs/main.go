// Command nonewprivs stands in for critest's nonewprivs image: installed
// set-user-ID root, it prints its effective user ID, which stays the caller's
// when the container runs with no_new_privs.
package main

import (
	"fmt"
	"os"
)

func main() { fmt.Printf("Effective uid: %d\n", os.Geteuid()) }
