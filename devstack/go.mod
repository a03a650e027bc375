module github.com/outboxtodo/outboxtodo/devstack

go 1.26.8
