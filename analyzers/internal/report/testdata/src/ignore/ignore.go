package ignore

func leak() int { return 0 }

func cases() {
	leak() // want `leak called`

	leak() //leakvet:ignore the test says so

	leak() // want `leak called`

	x := leak() //leakvet:ignore covers this line only
	_ = leak()  // want `leak called`

	//leakvet:ignore alone on the line above
	_ = leak()

	//leakvet:ignore two lines above covers nothing

	_ = leak() // want `leak called`

	//leakvet:ignore
	_ = leak() // want `leak called \(//leakvet:ignore needs a reason to silence this\)`

	_ = leak() //leakvet:ignore // want `needs a reason`

	_ = leak() //leakvet:ignoreXYZ not the directive // want `leak called$`
	_ = x
}
