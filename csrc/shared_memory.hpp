// Named POSIX shared-memory segments (shm_open + mmap) that another process can map by name.
// No Python headers here.
#pragma once
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>

namespace unirt {

// An OS error with its errno, so the Python glue can raise the matching OSError subclass.
class SystemError : public std::runtime_error {
 public:
  SystemError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

class SharedMemory {
 public:
  // Creates a new segment of `nbytes` (fails if the name exists), its space reserved up front so a full
  // /dev/shm is an error here rather than a SIGBUS on first write. The creator is its owner.
  static std::unique_ptr<SharedMemory> create(const std::string& name, std::size_t nbytes);
  // Maps an existing segment, whole.
  static std::unique_ptr<SharedMemory> attach(const std::string& name, bool writable);
  // Removes a segment's name (the memory lives on while mapped). Returns false if it did not exist.
  static bool unlink_name(const std::string& name);
  ~SharedMemory();  // unmaps; the owner (in the creating process) also unlinks the name if it has not already
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;

  // Removes the name now (owner only; idempotent). The mapping stays valid.
  void unlink();
  char* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& name() const { return name_; }
  bool owner() const { return owner_; }
  bool writable() const { return writable_; }
  bool unlinked() const { return unlinked_; }

 private:
  SharedMemory(std::string name, char* data, std::size_t size, bool owner, bool writable, long creator)
      : name_(std::move(name)), data_(data), size_(size), owner_(owner), writable_(writable), creator_(creator) {}
  std::string name_;
  char* data_;
  std::size_t size_;
  bool owner_;
  bool writable_;
  long creator_;  // the creating process: a forked child never unlinks its parent's segments
  bool unlinked_ = false;
};

}  // namespace unirt
